//! The one check that a token never reached what people read (logs, metrics, pages).

use access_token_operator::token::Token;

/// Asserts that no token's secret part (what the credential hashes: the full value contains
/// it) appears in `text`, naming `place` and the token's public id when one does.
pub fn assert_no_token_in(text: &str, tokens: &[&Token], place: &str) {
    for token in tokens {
        assert!(
            !text.contains(token.expose_secret_part()),
            "token {} in the {place}",
            token.id()
        );
    }
}
