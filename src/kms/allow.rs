//! `kek_allow`: which vault keys the operator lets each tenant name (DESIGN §11b). Without it a
//! tenant admin could name any key the gateway's cloud identity reaches (a confused deputy).
//!
//! The variable is a list of entries separated by commas or white space (newlines included); each
//! entry is `<tenant>=<pattern>`, or `*=<pattern>` for every tenant. A pattern is matched against
//! the scheme's whole `key_id` (AWS KMS) or `key_url` (Azure Key Vault) as the scheme names it:
//! `*` stands for any run of characters (`/` included), `{tenant}` for the requesting tenant's
//! id. Key URLs (`https://…`) are compared without regard to ASCII case, as Key Vault names are;
//! ARNs and key ids exactly. The `local` provider is governed by `dev_mode` alone.
//!
//! Unset: every key is allowed in dev mode, none outside it (deny by default).

use crate::ids::TenantId;
use crate::scheme::KekRef;
use crate::vars::{ConfigError, Variables};

/// The longest `kek_allow` value and pattern accepted.
pub const MAX_KEK_ALLOW_BYTES: usize = 64 << 10;
pub const MAX_PATTERN_BYTES: usize = 2048;

/// One entry: a tenant (or every tenant) and a key pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    /// `None`: every tenant (`*`).
    tenant: Option<TenantId>,
    pattern: String,
}

/// The parsed `kek_allow` variable; `None` when it is unset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KekAllow {
    rules: Option<Vec<Rule>>,
}

impl KekAllow {
    /// Reads `kek_allow`. The error names the entry by its position, never its text.
    pub fn load(vars: &dyn Variables) -> Result<Self, ConfigError> {
        let Some(v) = vars.get("kek_allow") else {
            return Ok(KekAllow { rules: None });
        };
        if v.len() > MAX_KEK_ALLOW_BYTES {
            return Err(ConfigError(format!(
                "variable kek_allow is longer than {MAX_KEK_ALLOW_BYTES} bytes"
            )));
        }
        let mut rules = Vec::new();
        for (i, entry) in
            v.split(|c: char| c == ',' || c.is_whitespace()).filter(|e| !e.is_empty()).enumerate()
        {
            let bad = || {
                ConfigError(format!(
                    "variable kek_allow: entry {} must be <tenant>=<pattern> or *=<pattern> (a tenant id, \
                     then a key ARN or key URL pattern of at most {MAX_PATTERN_BYTES} bytes)",
                    i + 1
                ))
            };
            let (tenant, pattern) = entry.split_once('=').ok_or_else(bad)?;
            let tenant = match tenant {
                "*" => None,
                t => Some(TenantId::parse(t).map_err(|_| bad())?),
            };
            if pattern.is_empty()
                || pattern.len() > MAX_PATTERN_BYTES
                || pattern.chars().any(char::is_control)
            {
                return Err(bad());
            }
            rules.push(Rule { tenant, pattern: pattern.to_string() });
        }
        Ok(KekAllow { rules: Some(rules) })
    }

    /// Whether `tenant` may name `kek`; `dev_mode` decides when `kek_allow` is unset.
    pub fn allows(&self, dev_mode: bool, tenant: &TenantId, kek: &KekRef) -> bool {
        let (id, fold_case) = match kek {
            KekRef::Local => return true,
            KekRef::AwsKms { key_id } => (key_id.trim(), false),
            KekRef::AzureKeyvault { key_url } => (key_url.trim(), true),
        };
        let Some(rules) = &self.rules else {
            return dev_mode;
        };
        rules.iter().filter(|r| r.tenant.as_ref().is_none_or(|t| t == tenant)).any(|r| {
            let pattern = r.pattern.replace("{tenant}", tenant.as_str());
            let fold = fold_case || pattern.starts_with("https://");
            if fold {
                glob(pattern.to_ascii_lowercase().as_bytes(), id.to_ascii_lowercase().as_bytes())
            } else {
                glob(pattern.as_bytes(), id.as_bytes())
            }
        })
    }
}

/// `*`-only glob matching over bytes (iterative, linear backtracking: no blow-up).
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vars::tests::MapVars;

    const ARN_A: &str = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
    const ARN_B: &str = "arn:aws:kms:eu-west-1:444455556666:key/1234abcd-12ab-34cd-56ef-1234567890ab";

    fn t(s: &str) -> TenantId {
        TenantId::parse(s).expect("tenant")
    }
    fn aws(id: &str) -> KekRef {
        KekRef::AwsKms { key_id: id.into() }
    }
    fn azure(url: &str) -> KekRef {
        KekRef::AzureKeyvault { key_url: url.into() }
    }
    fn load(v: &str) -> KekAllow {
        KekAllow::load(&MapVars::default().with("kek_allow", v)).expect("kek_allow")
    }

    #[test]
    fn unset_allows_in_dev_mode_only() {
        let none = KekAllow::load(&MapVars::default()).expect("unset");
        assert!(none.allows(true, &t("acme"), &aws(ARN_A)));
        assert!(!none.allows(false, &t("acme"), &aws(ARN_A)));
        assert!(!none.allows(false, &t("acme"), &azure("https://v.vault.azure.net/keys/k")));
        assert!(none.allows(false, &t("acme"), &KekRef::Local), "local is dev_mode's business");
    }

    #[test]
    fn per_tenant_and_shared_patterns() {
        let a = load(
            "acme=arn:aws:kms:eu-west-1:111122223333:key/*,\n *=https://shared.vault.azure.net/keys/{tenant}-*",
        );
        assert!(a.allows(false, &t("acme"), &aws(ARN_A)));
        assert!(!a.allows(false, &t("acme"), &aws(ARN_B)), "another account");
        assert!(!a.allows(false, &t("other"), &aws(ARN_A)), "another tenant's entry");
        assert!(a.allows(false, &t("other"), &azure("https://shared.vault.azure.net/keys/other-kek")));
        assert!(a.allows(false, &t("other"), &azure("https://SHARED.vault.azure.net/keys/Other-kek/abc")));
        assert!(!a.allows(false, &t("other"), &azure("https://shared.vault.azure.net/keys/acme-kek")));
        assert!(!a.allows(false, &t("acme"), &azure("https://evil.vault.azure.net/keys/acme-kek")));
        // in dev mode too, once the variable is set
        assert!(!a.allows(true, &t("acme"), &aws(ARN_B)));
        // ARNs are exact about case
        assert!(!a.allows(false, &t("acme"), &aws(&ARN_A.to_uppercase())));
    }

    #[test]
    fn glob_matches_whole_ids() {
        assert!(glob(b"a*c", b"abbbc"));
        assert!(glob(b"*", b""));
        assert!(glob(b"a**", b"a"));
        assert!(!glob(b"a*c", b"abcd"));
        assert!(!glob(b"abc", b"abcd"), "a pattern without * is the whole id");
        assert!(!glob(b"abc", b"ab"));
        assert!(glob(b"*x*y*z", b"xxyyzz"));
        let long = vec![b'a'; 4000];
        assert!(!glob(b"*a*a*a*a*a*b", &long), "no exponential backtracking");
    }

    #[test]
    fn malformed_entries_are_refused_without_echo() {
        for bad in ["arn:aws:kms:*", "acme=", "bad tenant!=x", "=x", "acme=a\u{1}b", ".acme=x"] {
            let e = KekAllow::load(&MapVars::default().with("kek_allow", bad)).expect_err(bad);
            assert!(e.0.starts_with("variable kek_allow: entry "), "{e}");
            assert!(!e.0.contains("arn:aws") && !e.0.contains("acme"), "{e}");
        }
        assert_eq!(load("  ,  "), KekAllow { rules: Some(vec![]) }, "set but empty allows nothing");
        assert!(!load(" , ").allows(true, &t("acme"), &aws(ARN_A)));
    }
}
