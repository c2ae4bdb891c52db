//! Tokens anyone who has seen a token id can make: the documented format (`atk_<id>_<secret>`
//! and a CRC32 checksum in 6 base62 digits), derived here from the docs rather than borrowed
//! from the crate, so the tests also check that the crate follows them.

use access_token_operator::token::Token;

/// `body` followed by its checksum.
pub fn with_checksum(body: &str) -> String {
    const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut crc = crc32fast::hash(body.as_bytes());
    let mut check = [b'0'; 6];
    for digit in check.iter_mut().rev() {
        *digit = BASE62[(crc % 62) as usize];
        crc /= 62;
    }
    format!("{body}{}", String::from_utf8_lossy(&check))
}

/// A well-formed token for `id` with a random secret and a valid checksum: a forgery.
pub fn forged_token(id: &str) -> String {
    let forged = with_checksum(&format!(
        "atk_{id}_{}",
        Token::generate().expose_secret_part()
    ));
    assert!(
        Token::parse(&forged).is_ok(),
        "forgery passes the format check"
    );
    forged
}
