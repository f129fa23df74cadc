//! Schemes: named protection recipes (algorithm, KEK, policy, mask rule), as stored and as shown.

pub mod mask;

use serde::{Deserialize, Serialize};

use crate::crypto::aead::Algorithm;
use crate::ids::{KeyVersion, SchemeName, TenantId};
use mask::MaskRule;

/// Which roles may do what with a scheme. An omitted list allows nobody (deny by default).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    #[serde(default)]
    pub protect: Vec<String>,
    #[serde(default)]
    pub unprotect: Vec<String>,
    #[serde(default)]
    pub mask: Vec<String>,
    #[serde(default)]
    pub admin: Vec<String>,
}

impl Policy {
    /// Role names: 1–64 printable ASCII characters without spaces; at most 64 per list.
    pub fn validate(&self) -> Result<(), String> {
        for (field, roles) in [
            ("protect", &self.protect),
            ("unprotect", &self.unprotect),
            ("mask", &self.mask),
            ("admin", &self.admin),
        ] {
            if roles.len() > 64 {
                return Err(format!("policy.{field} lists more than 64 roles"));
            }
            if !roles.iter().all(|r| valid_role(r)) {
                return Err(format!(
                    "policy.{field}: a role is 1-64 printable ASCII characters without spaces"
                ));
            }
        }
        Ok(())
    }
}

fn valid_role(r: &str) -> bool {
    !r.is_empty() && r.len() <= 64 && r.bytes().all(|b| b.is_ascii_graphic())
}

/// Where a scheme's key-encryption key lives (DESIGN §12).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "provider", rename_all = "kebab-case", deny_unknown_fields)]
pub enum KekRef {
    /// The dev-only local KEK from the `local_kek` variable.
    Local,
    /// An AWS KMS key (ARN, key id or alias).
    AwsKms { key_id: String },
    /// An Azure Key Vault key URL, `https://<vault>.vault.azure.net/keys/<name>[/<version>]`.
    AzureKeyvault { key_url: String },
}

impl KekRef {
    pub fn provider(&self) -> &'static str {
        match self {
            KekRef::Local => "local",
            KekRef::AwsKms { .. } => "aws-kms",
            KekRef::AzureKeyvault { .. } => "azure-keyvault",
        }
    }
}

/// A scheme as stored in the metadata database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scheme {
    pub tenant: TenantId,
    pub name: SchemeName,
    pub algorithm: Algorithm,
    pub kek: KekRef,
    pub policy: Policy,
    pub mask: MaskRule,
    pub current_version: KeyVersion,
    pub created_at: i64,
}

/// The operations a policy governs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Protect,
    Unprotect,
    Mask,
    Admin,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Protect => "protect",
            Operation::Unprotect => "unprotect",
            Operation::Mask => "mask",
            Operation::Admin => "admin",
        }
    }
}
