//! Azure Key Vault (and Managed HSM) as the KEK: `wrapkey` / `unwrapkey` over the Key Vault REST
//! API, with a bearer token from client credentials, the App Service / Functions managed-identity
//! endpoint, or IMDS, through [`HttpTransport`](crate::kms::transport::HttpTransport).
//!
//! - Wrap: `POST {vault}/keys/{name}/{version}/wrapkey?api-version=…` with
//!   `{"alg": "RSA-OAEP-256" | "A256KW", "value": base64url(...)}`; with no version in the scheme's
//!   key URL the version segment is empty (`/keys/{name}//wrapkey`, as the Azure SDKs send it) and
//!   the vault uses the key's current version. The `kid` in the answer (with its version) is stored
//!   as `kek_id`, its last segment as `kek_version`; unwrap calls exactly `{kid}/unwrapkey`.
//! - The wrapped value is the data key followed by SHA-256 of the key context
//!   (`context_bytes("veil/v1/azure-kv-wrap", ctx)`), 64 bytes: RSA-OAEP and AES key wrap are
//!   non-malleable, so a wrapped key moved to another tenant, scheme or version does not unwrap.
//! - Algorithm: `RSA-OAEP-256` (RSA keys), or `A256KW` for Managed HSM (`*.managedhsm.azure.net`,
//!   `oct-HSM` keys); `azure_keyvault_wrap_alg` overrides.
//! - Tokens: one per resource (`https://vault.azure.net`, or the Managed HSM / sovereign-cloud
//!   equivalent), reused until 5 minutes before expiry; a 401 answer (with its `WWW-Authenticate`
//!   challenge) gets one refreshed token and one more try.
//!
//! Two jobs, two rooms: [`credential`] gets bearer tokens (client credentials, the App Service /
//! Functions managed-identity endpoint, IMDS) and shares them; [`keyvault`] calls `wrapkey` and
//! `unwrapkey` with them, classifies the vault's answers and handles its 401 challenges.

mod credential;
mod keyvault;
#[cfg(test)]
mod tests;

pub use credential::Credential;
pub use keyvault::AzureKeyVault;

use serde_json::Value;
use zeroize::Zeroizing;

use crate::vars::{trimmed, ConfigError, Variables};

/// The Key Vault token audience (public cloud).
pub const VAULT_RESOURCE: &str = "https://vault.azure.net";
/// The Managed HSM token audience (public cloud).
pub const MANAGED_HSM_RESOURCE: &str = "https://managedhsm.azure.net";
pub const ALG_RSA_OAEP_256: &str = "RSA-OAEP-256";
pub const ALG_A256KW: &str = "A256KW";
const WHO_VAULT: &str = "Azure Key Vault";
const WHO_TOKEN: &str = "Azure token endpoint";

pub const DEFAULT_AUTHORITY_HOST: &str = "https://login.microsoftonline.com";
pub const DEFAULT_KEYVAULT_API_VERSION: &str = "7.5";
pub const DEFAULT_IMDS_ENDPOINT: &str = "http://169.254.169.254/metadata/identity/oauth2/token";

/// Azure Key Vault: where tokens come from, and how wrapkey/unwrapkey are called (`azure_*`).
#[derive(Clone, PartialEq, Eq)]
pub struct Settings {
    pub tenant_id: Option<String>,
    /// The app registration (with a secret) or the user-assigned managed identity (without).
    pub client_id: Option<String>,
    pub client_secret: Option<Zeroizing<String>>,
    pub authority_host: String,
    /// Managed identity on App Service / Functions (`IDENTITY_ENDPOINT` / `IDENTITY_HEADER`).
    pub identity_endpoint: Option<String>,
    pub identity_header: Option<Zeroizing<String>>,
    /// The IMDS token URL (`azure_imds_endpoint`, overridable for tests).
    pub imds_endpoint: String,
    /// Key Vault REST `api-version` (`azure_keyvault_api_version`).
    pub api_version: String,
    /// `azure_keyvault_wrap_alg`: `RSA-OAEP-256` or `A256KW`; default by the key URL's host.
    pub wrap_alg: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            tenant_id: None,
            client_id: None,
            client_secret: None,
            authority_host: DEFAULT_AUTHORITY_HOST.into(),
            identity_endpoint: None,
            identity_header: None,
            imds_endpoint: DEFAULT_IMDS_ENDPOINT.into(),
            api_version: DEFAULT_KEYVAULT_API_VERSION.into(),
            wrap_alg: None,
        }
    }
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("azure::Settings")
            .field("tenant_id", &self.tenant_id)
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret.as_ref().map(|_| "<secret>"))
            .field("authority_host", &self.authority_host)
            .field("identity_endpoint", &self.identity_endpoint)
            .field("identity_header", &self.identity_header.as_ref().map(|_| "<secret>"))
            .field("imds_endpoint", &self.imds_endpoint)
            .field("api_version", &self.api_version)
            .field("wrap_alg", &self.wrap_alg)
            .finish()
    }
}

impl Settings {
    /// Reads the `azure_*` variables; the API version and wrap algorithm are checked now, the
    /// token source when a key is first used.
    pub fn load(vars: &dyn Variables) -> Result<Self, ConfigError> {
        let api_version =
            vars.get("azure_keyvault_api_version").unwrap_or_else(|| DEFAULT_KEYVAULT_API_VERSION.into());
        if api_version.is_empty()
            || api_version.len() > 32
            || !api_version.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        {
            return Err(ConfigError("variable azure_keyvault_api_version must look like 7.5".into()));
        }
        let wrap_alg = vars.get("azure_keyvault_wrap_alg").map(|a| a.trim().to_string());
        if let Some(a) = &wrap_alg {
            if a != ALG_RSA_OAEP_256 && a != ALG_A256KW {
                return Err(ConfigError(
                    "variable azure_keyvault_wrap_alg must be RSA-OAEP-256 or A256KW".into(),
                ));
            }
        }
        Ok(Settings {
            tenant_id: trimmed(vars, "azure_tenant_id"),
            client_id: trimmed(vars, "azure_client_id"),
            client_secret: vars.get("azure_client_secret").map(Zeroizing::new),
            authority_host: trimmed(vars, "azure_authority_host")
                .unwrap_or_else(|| DEFAULT_AUTHORITY_HOST.into()),
            identity_endpoint: trimmed(vars, "azure_identity_endpoint"),
            identity_header: vars.get("azure_identity_header").map(Zeroizing::new),
            imds_endpoint: trimmed(vars, "azure_imds_endpoint")
                .unwrap_or_else(|| DEFAULT_IMDS_ENDPOINT.into()),
            api_version,
            wrap_alg,
        })
    }
}

/// The error code in an Azure error body (at `pointer`), reduced to `[A-Za-z0-9_]`, for operators.
fn json_code(body: &[u8], pointer: &str) -> String {
    let code = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.pointer(pointer).and_then(Value::as_str).map(str::to_string))
        .unwrap_or_default();
    let code: String = code.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_').take(64).collect();
    if code.is_empty() {
        "unknown".into()
    } else {
        code
    }
}
