//! Object ids: 25 lowercase base-36 characters, like Swarm's.

use rand::Rng;

pub fn new_id() -> String {
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut rng = rand::thread_rng();
    (0..25).map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char).collect()
}
