//! What keeps the console a private page on the user's machine: a one-time login key traded
//! for an HttpOnly, SameSite=Strict session cookie, a `Host` check against DNS rebinding,
//! same-origin writes only, and headers that forbid caching, framing and foreign scripts.

use std::sync::Mutex;

use axum::{
    body::Body,
    extract::{Request, State},
    http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Redirect, Response},
};
use rand::{TryRng as _, rngs::SysRng};

use super::ConsoleState;

/// Name of the session cookie.
const COOKIE: &str = "atk_console_session";

/// Scripts and styles from the console itself only, nothing inline, no frames.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// A random secret of 32 bytes as 64 hex characters (the login key and the session id).
pub fn random_secret() -> std::io::Result<String> {
    let mut bytes = [0u8; 32];
    SysRng
        .try_fill_bytes(&mut bytes)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Equality that takes as long whatever the first differing byte (keys are secrets).
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The login key (usable once) and the session it turns into.
pub struct Session {
    login_key: Mutex<Option<String>>,
    session_id: Mutex<Option<String>>,
}

impl Session {
    /// A session whose login key is `login_key`.
    pub fn new(login_key: String) -> Self {
        Self {
            login_key: Mutex::new(Some(login_key)),
            session_id: Mutex::new(None),
        }
    }

    /// Trades the login key for a fresh session id; `None` if the key is wrong or used.
    fn log_in(&self, presented: &str) -> Option<String> {
        let mut key = self.login_key.lock().ok()?;
        if !key.as_deref().is_some_and(|k| same_secret(k, presented)) {
            return None;
        }
        *key = None;
        let id = random_secret().ok()?;
        *self.session_id.lock().ok()? = Some(id.clone());
        Some(id)
    }

    fn is_session(&self, presented: &str) -> bool {
        self.session_id
            .lock()
            .ok()
            .and_then(|id| id.as_deref().map(|id| same_secret(id, presented)))
            .unwrap_or(false)
    }
}

/// `GET /login?key=…`: sets the session cookie and sends the browser on without the key in
/// its address bar or history.
pub async fn login(State(state): State<ConsoleState>, request: Request) -> Response {
    let presented = request
        .uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .find_map(|pair| pair.strip_prefix("key="))
        .unwrap_or_default();
    match state.session.log_in(presented) {
        Some(id) => {
            let cookie = format!("{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict");
            let mut response = Redirect::to("/").into_response();
            if let Ok(value) = HeaderValue::from_str(&cookie) {
                response.headers_mut().insert(header::SET_COOKIE, value);
            }
            response
        }
        None => refuse(
            StatusCode::UNAUTHORIZED,
            "This login link is not valid or was used already. Start `kubectl atk console` again and open the URL it prints.",
        ),
    }
}

fn cookie_session(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(COOKIE)?.strip_prefix('='))
}

/// A write is accepted only from a page of this console: the browser's `Origin` must be
/// ours and `Sec-Fetch-Site`, when sent, `same-origin`. A request with neither is refused.
fn same_origin_write(headers: &HeaderMap, origin: &str) -> bool {
    let header_text = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    let origin_ok = header_text(header::ORIGIN).map(|o| o == origin);
    let site_ok =
        header_text(HeaderName::from_static("sec-fetch-site")).map(|s| s == "same-origin");
    match (origin_ok, site_ok) {
        (None, None) => false,
        (origin_ok, site_ok) => origin_ok.unwrap_or(true) && site_ok.unwrap_or(true),
    }
}

/// Every request: the `Host` must name this console; then the session (except for the
/// login itself); then same-origin for writes. Every answer gets the safety headers.
pub async fn guard(State(state): State<ConsoleState>, request: Request, next: Next) -> Response {
    match check(&state, &request) {
        Ok(()) => with_safety_headers(next.run(request).await),
        Err((status, message)) => with_safety_headers(refuse(status, message)),
    }
}

fn check(state: &ConsoleState, request: &Request) -> Result<(), (StatusCode, &'static str)> {
    let headers = request.headers();
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    if !host.is_some_and(|h| state.hosts.iter().any(|ours| ours == h)) {
        return Err((
            StatusCode::MISDIRECTED_REQUEST,
            "This console answers only to the address it printed (foreign Host header).",
        ));
    }
    if request.uri().path() == "/login" {
        return Ok(());
    }
    if !cookie_session(headers).is_some_and(|id| state.session.is_session(id)) {
        return Err((
            StatusCode::UNAUTHORIZED,
            "Not logged in. Open the URL that `kubectl atk console` printed (it holds a one-time key).",
        ));
    }
    if request.method() != Method::GET && !same_origin_write(headers, &state.origin) {
        return Err((
            StatusCode::FORBIDDEN,
            "Writes are accepted only from the console's own pages (cross-origin request refused).",
        ));
    }
    Ok(())
}

fn refuse(status: StatusCode, message: &'static str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        Body::from(message),
    )
        .into_response()
}

fn with_safety_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::CACHE_CONTROL, "no-store"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_login_key_works_once() {
        let session = Session::new("k".repeat(64));
        assert!(session.log_in("x").is_none());
        let id = session.log_in(&"k".repeat(64)).expect("first use");
        assert!(session.is_session(&id));
        assert!(session.log_in(&"k".repeat(64)).is_none(), "second use");
        assert!(!session.is_session("other"));
    }

    #[test]
    fn writes_need_our_origin() {
        let origin = "http://127.0.0.1:8080";
        let with = |pairs: &[(&'static str, &'static str)]| {
            let mut headers = HeaderMap::new();
            for (name, value) in pairs {
                headers.insert(*name, HeaderValue::from_static(value));
            }
            same_origin_write(&headers, origin)
        };
        assert!(with(&[
            ("origin", "http://127.0.0.1:8080"),
            ("sec-fetch-site", "same-origin")
        ]));
        assert!(with(&[("origin", "http://127.0.0.1:8080")]));
        assert!(!with(&[("origin", "http://evil.example")]));
        assert!(!with(&[("sec-fetch-site", "cross-site")]));
        assert!(!with(&[]));
    }
}
