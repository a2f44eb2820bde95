//! Secrets (webhook codes, client secrets, tokens) are kept only as SHA-256 hashes and compared in
//! constant time.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub fn sha256_hex(secret: &str) -> String {
    // Every authenticated request hashes its credential: `hex::encode` goes a char at a time, the slice
    // encoder does not.
    let mut text = [0u8; 64];
    hex::encode_to_slice(Sha256::digest(secret.as_bytes()), &mut text).expect("64 hex digits for 32 bytes");
    String::from_utf8(text.to_vec()).expect("hex digits are ASCII")
}

/// Does `secret` hash to `expected_sha256`? Compared in constant time, so the answer's timing tells nothing
/// about how much of the hash matched.
pub fn hash_matches(secret: &str, expected_sha256: &str) -> bool {
    sha256_hex(secret).as_bytes().ct_eq(expected_sha256.as_bytes()).into()
}

/// A new random secret: 32 bytes as hex (access and refresh tokens, client secrets, application tokens).
pub fn new_secret() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
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
        assert_eq!(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        let hash = sha256_hex("demo-secret");
        assert!(hash_matches("demo-secret", &hash));
        assert!(!hash_matches("demo-secreT", &hash));
        assert_eq!(random_alphanumeric(24).len(), 24);
        assert_ne!(random_alphanumeric(24), random_alphanumeric(24));
        assert_eq!(new_secret().len(), 64);
        assert_ne!(new_secret(), new_secret());
    }
}
