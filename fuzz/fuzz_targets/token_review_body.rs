//! What the verifier does with a TokenReview request body: decode it
//! (`server::presented_token`), then parse the token. Neither may panic on any body; an
//! accepted body's token must be the JSON document's `spec.token`, and a refusal is one of
//! the fixed messages (it never quotes the body).
#![no_main]

use access_token_operator::token::Token;
use access_token_operator::verifier::server::{BodyError, MAX_BODY_BYTES, presented_token};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    if body.len() > MAX_BODY_BYTES {
        return; // the server refuses these before decoding
    }
    match presented_token(body) {
        Ok(token) => {
            assert!(!token.is_empty());
            let document: serde_json::Value =
                serde_json::from_slice(body).expect("an accepted body is JSON");
            assert_eq!(
                document["spec"]["token"].as_str(),
                Some(token.as_str()),
                "the decoder took another token than the document's spec.token"
            );
            if let Ok(parsed) = Token::parse(&token) {
                assert_eq!(parsed.expose_secret(), token);
            }
        }
        Err(refused) => {
            assert!(matches!(
                refused,
                BodyError::NotATokenReview | BodyError::NoToken
            ));
            assert!(!refused.message().is_empty());
        }
    }
});
