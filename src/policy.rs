//! May this principal do this operation on this scheme? Deny unless a rule says yes.

use crate::auth::Principal;
use crate::scheme::{Operation, Policy};

/// The tenant-wide role that may create and administer every scheme of its tenant.
pub const TENANT_ADMIN_ROLE: &str = "admin";

/// True when one of the principal's roles is listed for `op` in the scheme's policy
/// (administration is also open to the tenant role `admin`; rewrap to whoever may administer).
pub fn allows(principal: &Principal, policy: &Policy, op: Operation) -> bool {
    let listed = match op {
        Operation::Protect => &policy.protect,
        Operation::Unprotect => &policy.unprotect,
        Operation::Mask => &policy.mask,
        Operation::Admin => &policy.admin,
        Operation::Rewrap => &policy.rewrap,
    };
    if op == Operation::Admin && may_create_schemes(principal) {
        return true;
    }
    if op == Operation::Rewrap && allows(principal, policy, Operation::Admin) {
        return true;
    }
    listed.iter().any(|role| principal.roles.contains(role))
}

/// The tenant-wide role that may erase data subjects and read erasure certificates (besides `admin`).
pub const TENANT_PRIVACY_ROLE: &str = "privacy";

/// Erasing subjects and reading certificates takes the tenant role `admin` or `privacy`.
pub fn may_erase_subjects(principal: &Principal) -> bool {
    principal.roles.contains(TENANT_ADMIN_ROLE) || principal.roles.contains(TENANT_PRIVACY_ROLE)
}

/// Erasing a whole scheme or the whole tenant takes the tenant role `admin` (not `privacy`).
pub fn may_erase_scopes(principal: &Principal) -> bool {
    principal.roles.contains(TENANT_ADMIN_ROLE)
}

/// The tenant-wide role that may read the audit log (besides `admin`).
pub const TENANT_AUDITOR_ROLE: &str = "auditor";

/// Reading and verifying the tenant's audit log takes the tenant role `admin` or `auditor`.
pub fn may_read_audit(principal: &Principal) -> bool {
    principal.roles.contains(TENANT_ADMIN_ROLE) || principal.roles.contains(TENANT_AUDITOR_ROLE)
}

/// Creating schemes takes the tenant role `admin`.
pub fn may_create_schemes(principal: &Principal) -> bool {
    principal.roles.contains(TENANT_ADMIN_ROLE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::TenantId;

    fn who(roles: &[&str]) -> Principal {
        Principal {
            tenant: TenantId::parse("t1").expect("tenant"),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            subject: "u".into(),
            kind: crate::auth::PrincipalKind::Jwt,
        }
    }

    #[test]
    fn deny_by_default() {
        let empty = Policy::default();
        for op in [Operation::Protect, Operation::Unprotect, Operation::Mask, Operation::Rewrap] {
            assert!(!allows(&who(&["app", "support"]), &empty, op));
        }
        assert!(!allows(&who(&["app"]), &empty, Operation::Admin));
    }

    #[test]
    fn listed_roles_only() {
        let p = Policy {
            protect: vec!["app".into()],
            unprotect: vec!["support".into()],
            mask: vec!["analyst".into()],
            admin: vec!["ops".into()],
            rewrap: vec!["converter".into()],
        };
        assert!(allows(&who(&["app"]), &p, Operation::Protect));
        assert!(!allows(&who(&["app"]), &p, Operation::Unprotect));
        assert!(allows(&who(&["x", "support"]), &p, Operation::Unprotect));
        assert!(!allows(&who(&["support"]), &p, Operation::Mask));
        assert!(allows(&who(&["ops"]), &p, Operation::Admin));
        assert!(allows(&who(&["admin"]), &p, Operation::Admin));
        assert!(!allows(&who(&["admin"]), &p, Operation::Unprotect));
        assert!(allows(&who(&["converter"]), &p, Operation::Rewrap));
        assert!(!allows(&who(&["converter"]), &p, Operation::Unprotect));
        assert!(allows(&who(&["ops"]), &p, Operation::Rewrap), "administrators may rewrap");
        assert!(allows(&who(&["admin"]), &p, Operation::Rewrap));
        assert!(!allows(&who(&["support", "app"]), &p, Operation::Rewrap));
        assert!(may_create_schemes(&who(&["admin"])));
        assert!(may_erase_subjects(&who(&["admin"])) && may_erase_subjects(&who(&["privacy"])));
        assert!(!may_erase_subjects(&who(&["support", "app", "ops"])));
        assert!(!may_create_schemes(&who(&["privacy"])));
        assert!(!may_create_schemes(&who(&["ops"])));
    }
}
