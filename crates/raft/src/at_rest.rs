//! Raft data encrypted at rest: every value the durable store writes (log entries, hard state,
//! members, snapshot data and metadata) is sealed with the manager's data key, AES-256-GCM, so
//! the files under `raft/` show no service name, secret or CA key (keys stay in the clear: they
//! are indexes and fixed names).
//!
//! A sealed value is `[VERSION] nonce(12) ciphertext tag(16)`, authenticated together with the
//! key it is stored under (a value moved to another key does not open). Nonces: eight random
//! bytes drawn each time a key is loaded and a 32-bit counter (past 2^32 seals, fully random
//! ones), so two loads of one key repeat a nonce only if their 64-bit prefixes collide.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

use crate::RaftError;

/// The first byte of a sealed value (a format version).
const VERSION: u8 = 1;
/// Bytes a sealed value adds to the plain one.
pub const OVERHEAD: usize = 1 + NONCE_LEN + 16;
/// The length of a data key and of a key-encryption key.
pub const KEY_LEN: usize = 32;

/// The key raft data is sealed with.
#[derive(Clone)]
pub struct DataKey {
    inner: Arc<Inner>,
}

struct Inner {
    key: LessSafeKey,
    raw: [u8; KEY_LEN],
    prefix: [u8; 8],
    counter: AtomicU64,
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(<secret>)")
    }
}

impl DataKey {
    /// A new random key.
    pub fn generate() -> DataKey {
        DataKey::from_bytes(random_bytes())
    }

    pub fn from_bytes(raw: [u8; KEY_LEN]) -> DataKey {
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &raw).expect("32 bytes make an AES-256 key"));
        let mut prefix = [0u8; 8];
        SystemRandom::new().fill(&mut prefix).expect("the system's random source works");
        DataKey { inner: Arc::new(Inner { key, raw, prefix, counter: AtomicU64::new(0) }) }
    }

    fn next_nonce(&self) -> [u8; NONCE_LEN] {
        let mut nonce = [0u8; NONCE_LEN];
        match u32::try_from(self.inner.counter.fetch_add(1, Ordering::Relaxed)) {
            Ok(count) => {
                nonce[..8].copy_from_slice(&self.inner.prefix);
                nonce[8..].copy_from_slice(&count.to_be_bytes());
            }
            Err(_) => SystemRandom::new().fill(&mut nonce).expect("the system's random source works"),
        }
        nonce
    }

    /// `plain`, sealed, bound to `aad` (the key it is stored under).
    pub fn seal_for(&self, aad: &[u8], plain: &[u8]) -> Vec<u8> {
        let nonce = self.next_nonce();
        let mut out = Vec::with_capacity(plain.len() + OVERHEAD);
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plain);
        let tag = self
            .inner
            .key
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut out[1 + NONCE_LEN..])
            .expect("AES-GCM seals any length a store holds");
        out.extend_from_slice(tag.as_ref());
        out
    }

    /// `plain`, sealed with nothing bound to it (the wrapped data key).
    pub fn seal(&self, plain: &[u8]) -> Vec<u8> {
        self.seal_for(&[], plain)
    }

    /// The plain value of `sealed`.
    pub fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, RaftError> {
        self.open_for(&[], sealed)
    }

    /// The plain value of `sealed` for `aad`; an error if it was not sealed with this key for
    /// `aad`, or was changed.
    pub fn open_for(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, RaftError> {
        if sealed.len() < OVERHEAD || sealed[0] != VERSION {
            return Err(RaftError::Corrupt("a value in the raft store is not sealed with a known format".into()));
        }
        let nonce = Nonce::try_assume_unique_for_key(&sealed[1..1 + NONCE_LEN]).expect("12 bytes");
        let mut buffer = sealed[1 + NONCE_LEN..].to_vec();
        let plain = self.inner.key.open_in_place(nonce, Aad::from(aad), &mut buffer).map_err(|_| {
            RaftError::Corrupt(
                "a value in the raft store does not open with this manager's data key (damaged, or another key's)"
                    .into(),
            )
        })?;
        let len = plain.len();
        buffer.truncate(len);
        Ok(buffer)
    }

    /// This key sealed with `kek` (a key-encryption key), to store beside the data.
    pub fn wrap(&self, kek: &[u8; KEY_LEN]) -> Vec<u8> {
        DataKey::from_bytes(*kek).seal(&self.inner.raw)
    }

    /// The key `wrapped` holds; `None` if `kek` does not open it.
    pub fn unwrap(wrapped: &[u8], kek: &[u8; KEY_LEN]) -> Option<DataKey> {
        let raw = DataKey::from_bytes(*kek).open(wrapped).ok()?;
        Some(DataKey::from_bytes(raw.try_into().ok()?))
    }
}

/// 32 random bytes from the system's source.
pub fn random_bytes() -> [u8; KEY_LEN] {
    let mut raw = [0u8; KEY_LEN];
    SystemRandom::new().fill(&mut raw).expect("the system's random source works");
    raw
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_never_show_in_the_clear() {
        let key = DataKey::generate();
        let plain = b"service web-frontend, secret hunter2";
        let sealed = key.seal(plain);
        assert_eq!(sealed.len(), plain.len() + OVERHEAD);
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(key.open(&sealed).unwrap(), plain);
        assert_ne!(key.seal(plain), sealed, "a fresh nonce each time");
        assert_eq!(key.open(&key.seal(b"")).unwrap(), b"");
        let bound = key.seal_for(b"m:hard_state", plain);
        assert_eq!(key.open_for(b"m:hard_state", &bound).unwrap(), plain);
        assert!(key.open_for(b"m:members", &bound).is_err(), "a value moved to another key does not open");
    }

    #[test]
    fn another_key_or_a_changed_byte_is_refused() {
        let key = DataKey::generate();
        let sealed = key.seal(b"value");
        assert!(DataKey::generate().open(&sealed).is_err());
        let mut changed = sealed.clone();
        *changed.last_mut().unwrap() ^= 1;
        assert!(key.open(&changed).is_err());
        assert!(key.open(b"plain").is_err());
    }

    #[test]
    fn a_wrapped_key_opens_only_with_its_key_encryption_key() {
        let key = DataKey::generate();
        let kek = random_bytes();
        let wrapped = key.wrap(&kek);
        let unwrapped = DataKey::unwrap(&wrapped, &kek).expect("opens");
        assert_eq!(unwrapped.open(&key.seal(b"x")).unwrap(), b"x");
        assert!(DataKey::unwrap(&wrapped, &random_bytes()).is_none());
    }
}
