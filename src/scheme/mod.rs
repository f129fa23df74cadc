//! Schemes: named protection recipes (algorithm, KEK, policy, mask rule), as stored and as shown.

pub mod mask;

use std::fmt;

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
    /// May re-encrypt tokens under the current version (`/v1/rewrap`), getting tokens back,
    /// never plaintext. Shown only when not empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rewrap: Vec<String>,
}

impl Policy {
    /// Role names: 1–64 printable ASCII characters without spaces; at most 64 per list.
    pub fn validate(&self) -> Result<(), String> {
        for (field, roles) in [
            ("protect", &self.protect),
            ("unprotect", &self.unprotect),
            ("mask", &self.mask),
            ("admin", &self.admin),
            ("rewrap", &self.rewrap),
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
    /// Tokens of versions below this one are refused (`key_version_retired`); 1 ≤ it ≤ current.
    pub min_decryption_version: KeyVersion,
    /// When set, the first protect that finds the current version older than this rotates first.
    pub rotation_period: Option<RotationPeriod>,
    pub created_at: i64,
}

/// How long a data-key version stays current before a protect rotates the scheme: written
/// `<n>s`, `<n>m`, `<n>h` or `<n>d`, from one second to [`RotationPeriod::MAX_SECS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RotationPeriod(u64);

impl RotationPeriod {
    /// The longest period accepted: 3650 days.
    pub const MAX_SECS: u64 = 3650 * 86_400;

    pub fn parse(s: &str) -> Result<Self, &'static str> {
        const RULE: &str = "rotation_period is a whole number followed by s, m, h or d (e.g. \"30d\"), \
                            from 1s to 3650d";
        if !s.is_ascii() || s.len() < 2 {
            return Err(RULE);
        }
        let (digits, unit) = s.split_at(s.len() - 1);
        let unit = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            _ => return Err(RULE),
        };
        if digits.is_empty() || digits.len() > 10 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(RULE);
        }
        let n: u64 = digits.parse().map_err(|_| RULE)?;
        Self::from_secs(n.saturating_mul(unit)).ok_or(RULE)
    }

    pub fn from_secs(secs: u64) -> Option<Self> {
        (1..=Self::MAX_SECS).contains(&secs).then_some(Self(secs))
    }

    pub fn secs(self) -> u64 {
        self.0
    }

    /// True when a version created at `created_at` is due for rotation at `now` (Unix seconds).
    pub fn is_due(self, created_at: i64, now: i64) -> bool {
        now.saturating_sub(created_at) >= i64::try_from(self.0).unwrap_or(i64::MAX)
    }
}

/// Shown in the largest unit that divides it exactly: `86400` seconds is `"1d"`.
impl fmt::Display for RotationPeriod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (unit, secs) in [("d", 86_400), ("h", 3600), ("m", 60)] {
            if self.0.is_multiple_of(secs) {
                return write!(f, "{}{unit}", self.0 / secs);
            }
        }
        write!(f, "{}s", self.0)
    }
}

/// The operations a policy governs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Protect,
    Unprotect,
    Mask,
    Admin,
    Rewrap,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Protect => "protect",
            Operation::Unprotect => "unprotect",
            Operation::Mask => "mask",
            Operation::Admin => "admin",
            Operation::Rewrap => "rewrap",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::RotationPeriod;

    #[test]
    fn rotation_periods_parse_and_show_canonically() {
        for (text, secs, shown) in [
            ("1s", 1, "1s"),
            ("90s", 90, "90s"),
            ("120s", 120, "2m"),
            ("30d", 2_592_000, "30d"),
            ("24h", 86_400, "1d"),
            ("3650d", 315_360_000, "3650d"),
        ] {
            let p = RotationPeriod::parse(text).expect(text);
            assert_eq!((p.secs(), p.to_string().as_str()), (secs, shown), "{text}");
        }
        for bad in [
            "",
            "d",
            "0s",
            "0d",
            "3651d",
            "-1d",
            "1w",
            "1 d",
            "1.5d",
            "+1d",
            "99999999999s",
            "1D",
            "1é",
            "é",
            "d1",
        ] {
            assert!(RotationPeriod::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(RotationPeriod::from_secs(0), None);
        assert_eq!(RotationPeriod::from_secs(RotationPeriod::MAX_SECS + 1), None);
    }

    #[test]
    fn due_exactly_at_the_period() {
        let p = RotationPeriod::parse("1m").expect("1m");
        assert!(!p.is_due(1000, 1059));
        assert!(p.is_due(1000, 1060));
        assert!(!p.is_due(1000, 900)); // a clock behind the creation time never rotates
    }
}
