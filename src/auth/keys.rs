//! The types [`super::jwt`] and [`super::jwks`] share: the JWS algorithms Veil verifies, and a
//! public key bound to exactly one of them. A leaf, so that neither of the two imports the other.

use jwt_simple::prelude::{ES256PublicKey, Ed25519PublicKey, RS256PublicKey};

/// The JWS algorithms Veil verifies. Anything else (`none`, HS384, PS256, …) is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Alg {
    Hs256,
    Rs256,
    Es256,
    EdDsa,
}

impl Alg {
    /// The header's `alg`, if it is one Veil verifies.
    pub(crate) fn from_header(name: &str) -> Option<Self> {
        match name {
            "HS256" => Some(Self::Hs256),
            "RS256" => Some(Self::Rs256),
            "ES256" => Some(Self::Es256),
            "EdDSA" => Some(Self::EdDsa),
            _ => None,
        }
    }
}

/// A public key bound to the one JWS algorithm it may verify.
#[derive(Clone)]
pub(crate) enum PublicKey {
    /// Boxed: an RSA key is several times the size of the others.
    Rs256(Box<RS256PublicKey>),
    Es256(ES256PublicKey),
    EdDsa(Ed25519PublicKey),
}

impl PublicKey {
    pub(crate) fn alg(&self) -> Alg {
        match self {
            Self::Rs256(_) => Alg::Rs256,
            Self::Es256(_) => Alg::Es256,
            Self::EdDsa(_) => Alg::EdDsa,
        }
    }
}
