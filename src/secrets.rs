//! Secrets (webhook codes, client secrets, tokens) are kept only as SHA-256 hashes and compared in
//! constant time.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub fn sha256_hex(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Does `secret` hash to `expected_sha256`? Compared in constant time, so the answer's timing tells nothing
/// about how much of the hash matched.
pub fn hash_matches(secret: &str, expected_sha256: &str) -> bool {
    sha256_hex(secret).as_bytes().ct_eq(expected_sha256.as_bytes()).into()
}

/// A new random alphanumeric secret of `len` characters (webhook codes, authorization codes).
pub fn random_alphanumeric(len: usize) -> String {
    use rand::Rng;
    use rand::distributions::Alphanumeric;
    rand::thread_rng().sample_iter(&Alphanumeric).take(len).map(char::from).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_only_the_right_secret() {
        let hash = sha256_hex("demo-secret");
        assert!(hash_matches("demo-secret", &hash));
        assert!(!hash_matches("demo-secreT", &hash));
        assert_eq!(random_alphanumeric(24).len(), 24);
        assert_ne!(random_alphanumeric(24), random_alphanumeric(24));
    }
}
