//! Docker-like generated names (`eager_turing`) for services created without `--name`.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

const ADJECTIVES: &[&str] = &[
    "admiring",
    "agitated",
    "amazing",
    "angry",
    "awesome",
    "blissful",
    "bold",
    "brave",
    "busy",
    "charming",
    "clever",
    "cool",
    "compassionate",
    "competent",
    "confident",
    "crazy",
    "dazzling",
    "determined",
    "eager",
    "ecstatic",
    "elastic",
    "elegant",
    "epic",
    "exciting",
    "fervent",
    "festive",
    "focused",
    "friendly",
    "frosty",
    "gallant",
    "gifted",
    "goofy",
    "gracious",
    "happy",
    "hopeful",
    "hungry",
    "infallible",
    "inspiring",
    "jolly",
    "jovial",
    "keen",
    "kind",
    "laughing",
    "loving",
    "lucid",
    "magical",
    "modest",
    "musing",
    "naughty",
    "nervous",
    "nice",
    "nifty",
    "nostalgic",
    "objective",
    "optimistic",
    "peaceful",
    "pedantic",
    "pensive",
    "practical",
    "priceless",
    "quirky",
    "quizzical",
    "relaxed",
    "reverent",
    "romantic",
    "sad",
    "serene",
    "sharp",
    "silly",
    "sleepy",
    "stoic",
    "strange",
    "stupefied",
    "suspicious",
    "sweet",
    "tender",
    "thirsty",
    "trusting",
    "unruffled",
    "upbeat",
    "vibrant",
    "vigilant",
    "vigorous",
    "wizardly",
    "wonderful",
    "xenodochial",
    "youthful",
    "zealous",
    "zen",
];

const SURNAMES: &[&str] = &[
    "agnesi",
    "albattani",
    "allen",
    "archimedes",
    "babbage",
    "banach",
    "bardeen",
    "bartik",
    "bell",
    "bhabha",
    "blackwell",
    "bohr",
    "booth",
    "brattain",
    "burnell",
    "cannon",
    "carson",
    "cerf",
    "chandrasekhar",
    "clarke",
    "curie",
    "darwin",
    "dijkstra",
    "einstein",
    "elion",
    "engelbart",
    "euclid",
    "euler",
    "faraday",
    "fermat",
    "fermi",
    "feynman",
    "franklin",
    "galileo",
    "gauss",
    "goldberg",
    "goodall",
    "hamilton",
    "hawking",
    "heisenberg",
    "hertz",
    "hodgkin",
    "hopper",
    "hypatia",
    "johnson",
    "kapitsa",
    "keller",
    "kepler",
    "knuth",
    "kowalevski",
    "lamarr",
    "lamport",
    "leakey",
    "liskov",
    "lovelace",
    "lumiere",
    "margulis",
    "mayer",
    "mccarthy",
    "mcclintock",
    "meitner",
    "mendel",
    "merkle",
    "morse",
    "napier",
    "newton",
    "nobel",
    "noether",
    "pare",
    "pascal",
    "pasteur",
    "perlman",
    "pike",
    "poincare",
    "ptolemy",
    "raman",
    "ritchie",
    "rosalind",
    "sammet",
    "shannon",
    "shirley",
    "sinoussi",
    "stallman",
    "swanson",
    "tesla",
    "thompson",
    "torvalds",
    "turing",
    "varahamihira",
    "volhard",
    "wilbur",
    "williams",
    "wing",
    "wozniak",
    "wright",
    "yalow",
];

/// A random `adjective_surname`. Always a valid service name.
pub fn generate() -> String {
    name_from(random_u64())
}

/// The name for a given random value (deterministic; used by `generate` and tests).
pub fn name_from(random: u64) -> String {
    let adjective = ADJECTIVES[((random & 0xffff_ffff) % ADJECTIVES.len() as u64) as usize];
    let surname = SURNAMES[((random >> 32) % SURNAMES.len() as u64) as usize];
    format!("{adjective}_{surname}")
}

/// A random value from the standard library's randomly keyed hasher (no extra dependency).
fn random_u64() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(std::process::id().into());
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_word_makes_a_valid_name() {
        for adjective in ADJECTIVES {
            for surname in SURNAMES {
                let name = format!("{adjective}_{surname}");
                shoal_types::validate_name("name", &name).unwrap();
            }
        }
    }

    #[test]
    fn generated_names_are_valid_and_vary() {
        let names: std::collections::BTreeSet<String> = (0..50).map(|_| generate()).collect();
        for name in &names {
            shoal_types::validate_name("name", name).unwrap();
            assert!(name.contains('_'), "{name}");
        }
        assert!(names.len() > 1, "50 generated names were all equal: {names:?}");
    }

    #[test]
    fn picks_from_both_halves_of_the_random_value() {
        assert_eq!(name_from(0), "admiring_agnesi");
        assert_eq!(name_from(1 | (1 << 32)), "agitated_albattani");
    }
}
