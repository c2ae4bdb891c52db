//! `Token::parse` against a reference check written from the format's description
//! (`atk_<12 of [a-z0-9]>_<32 base62><6 base62 CRC32>`): both must agree on every input, and
//! an accepted token must give back exactly its input, its id and its secret part, and
//! never show the secret in `Debug` or `Display`.
#![no_main]

use access_token_operator::token::{
    CHECK_LEN, ID_LEN, SECRET_LEN, SEPARATOR, TOKEN_LEN, TOKEN_PREFIX, Token, TokenId,
};
use libfuzzer_sys::fuzz_target;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const ID_START: usize = TOKEN_PREFIX.len();
const SEP_POS: usize = ID_START + ID_LEN;
const SECRET_START: usize = SEP_POS + 1;
const CHECK_START: usize = SECRET_START + SECRET_LEN;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the mode. Random bytes almost never carry a valid CRC32, so mode 1
    // replaces the last six characters with the right checksum: that reaches well-formed
    // tokens and their near misses (one bad character, wrong length, ...).
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Ok(input) = std::str::from_utf8(rest) else {
        return;
    };
    let candidate = if mode & 1 == 1 {
        with_reference_checksum(input)
    } else {
        input.to_owned()
    };
    check_token(&candidate);
    check_token_id(input);
});

fn check_token(s: &str) {
    let parsed = Token::parse(s);
    assert_eq!(
        parsed.is_ok(),
        reference_is_token(s),
        "Token::parse and the reference disagree: {parsed:?}"
    );
    assert_eq!(
        s.parse::<Token>().is_ok(),
        parsed.is_ok(),
        "FromStr differs from parse"
    );
    let Ok(token) = parsed else {
        return;
    };
    assert_eq!(token.expose_secret(), s);
    assert_eq!(token.id().as_str(), &s[ID_START..SEP_POS]);
    assert_eq!(token.expose_secret_part(), &s[SECRET_START..CHECK_START]);
    let secret = token.expose_secret_part();
    for shown in [format!("{token}"), format!("{token:?}")] {
        assert!(
            !shown.contains(secret),
            "the secret leaks through formatting"
        );
    }
    assert!(Token::parse(token.expose_secret()).is_ok());
}

fn check_token_id(s: &str) {
    let reference = s.len() == ID_LEN && s.bytes().all(is_id_char);
    assert_eq!(TokenId::try_from(s).is_ok(), reference, "TokenId disagrees");
}

/// The format, checked the long way round.
fn reference_is_token(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == TOKEN_LEN
        && s.starts_with(TOKEN_PREFIX)
        && b[SEP_POS] == SEPARATOR as u8
        && b[ID_START..SEP_POS].iter().copied().all(is_id_char)
        && b[SECRET_START..].iter().all(u8::is_ascii_alphanumeric)
        && b[CHECK_START..] == reference_checksum(&b[..CHECK_START])
}

fn is_id_char(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// CRC32 (IEEE) as `CHECK_LEN` base62 digits, most significant first.
fn reference_checksum(bytes: &[u8]) -> [u8; CHECK_LEN] {
    let mut n = u64::from(crc32fast::hash(bytes));
    let mut out = [b'0'; CHECK_LEN];
    for digit in out.iter_mut().rev() {
        *digit = BASE62[(n % 62) as usize];
        n /= 62;
    }
    out
}

fn with_reference_checksum(s: &str) -> String {
    let Some(cut) = s.len().checked_sub(CHECK_LEN) else {
        return s.to_owned();
    };
    if !s.is_char_boundary(cut) {
        return s.to_owned();
    }
    let body = &s[..cut];
    let check = reference_checksum(body.as_bytes());
    format!(
        "{body}{}",
        std::str::from_utf8(&check).expect("base62 is ASCII")
    )
}
