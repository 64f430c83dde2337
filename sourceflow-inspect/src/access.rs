//! Who may see and change what: the token that guards every page when one is set, the rule
//! that a server reachable beyond this machine needs one, and the headers every response
//! carries (a strict Content-Security-Policy, no sniffing, no caching, no referrer).

use std::net::SocketAddr;

use axum::extract::{Query, Request, State};
use axum::http::header::{self, HeaderValue};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use crate::html;

/// The cookie a browser keeps the token in after opening the URL with `?token=`.
pub(crate) const COOKIE: &str = "sourceflow_inspect_token";

/// The policy on every response: only this server's own stylesheet and script, no inline code,
/// no plugins, no framing, forms posting only back here.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; \
     script-src 'self'; connect-src 'self'; img-src 'self'; form-action 'self'; \
     frame-ancestors 'none'; base-uri 'none'";

/// Why the inspector refuses to start.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AccessError {
    /// The address is reachable from other machines and no token guards the pages.
    #[error(
        "refusing to listen on {0} without a token: an address beyond loopback exposes the \
         whole store (pass --token, or bind 127.0.0.1)"
    )]
    ExposedWithoutToken(SocketAddr),
    /// Actions were enabled without a token to require.
    #[error("actions that change the store need a token (pass --token with --allow-actions)")]
    ActionsWithoutToken,
    /// The token is too short to resist guessing.
    #[error("the token must be at least 16 characters")]
    WeakToken,
}

/// Checks that listening on `addr` is allowed: loopback always, any other address only with
/// a token.
///
/// # Errors
/// [`AccessError::ExposedWithoutToken`] for a non-loopback address without a token.
pub fn check_bind(addr: &SocketAddr, token: Option<&str>) -> Result<(), AccessError> {
    if addr.ip().is_loopback() || token.is_some() {
        Ok(())
    } else {
        Err(AccessError::ExposedWithoutToken(*addr))
    }
}

/// Checks a token's strength.
///
/// # Errors
/// [`AccessError::WeakToken`] if it is shorter than 16 characters.
pub fn check_token(token: &str) -> Result<(), AccessError> {
    if token.chars().count() < 16 {
        Err(AccessError::WeakToken)
    } else {
        Ok(())
    }
}

/// Compares without stopping at the first difference, so the time taken says nothing about
/// how much of a guess was right.
fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut diff = a.len() ^ b.len();
    for (i, x) in a.iter().enumerate() {
        diff |= usize::from(x ^ b.get(i).copied().unwrap_or(0));
    }
    diff == 0
}

/// The token a request carries: `Authorization: Bearer`, or the cookie.
fn presented(request: &Request) -> Option<String> {
    let headers = request.headers();
    if let Some(bearer) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        return Some(bearer.trim().to_owned());
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_owned())
}

#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

/// What [`guard`] checks a request against: the inspector's token, if one is set, and
/// whether it answers only requests addressed to this machine.
#[derive(Clone)]
pub(crate) struct Access {
    token: Option<std::sync::Arc<str>>,
    loopback_only: bool,
}

impl Access {
    pub(crate) fn new(token: Option<&str>, loopback_only: bool) -> Self {
        Self {
            token: token.map(std::sync::Arc::from),
            loopback_only,
        }
    }
}

/// Guards every route when a token is set. A `GET` with the right `?token=` stores it in an
/// HTTP-only, same-site cookie and redirects to the same page without it, so the token leaves
/// the address bar and history. A request from another origin is refused whatever it carries.
pub(crate) async fn guard(State(access): State<Access>, request: Request, next: Next) -> Response {
    if !same_origin(&request) {
        return refuse(StatusCode::FORBIDDEN, "cross-origin requests are refused");
    }
    if access.loopback_only && !addressed_to_loopback(&request) {
        return refuse(
            StatusCode::FORBIDDEN,
            "this inspector answers only requests addressed to this machine \
             (127.0.0.1, [::1] or localhost)",
        );
    }
    let Some(token) = access.token.as_deref() else {
        return next.run(request).await;
    };
    if presented(&request).is_some_and(|t| same(&t, token)) {
        return next.run(request).await;
    }
    if request.method() == Method::GET {
        if let Ok(Query(TokenQuery { token: Some(given) })) =
            Query::<TokenQuery>::try_from_uri(request.uri())
        {
            if same(&given, token) {
                return with_cookie(&request, token);
            }
        }
    }
    refuse(
        StatusCode::UNAUTHORIZED,
        "this inspector needs its token: open the URL it printed when it started",
    )
}

/// Whether the request's `Host` names this machine: a page of another site whose name was
/// pointed at 127.0.0.1 (DNS rebinding) names its own host, and is refused.
fn addressed_to_loopback(request: &Request) -> bool {
    let Some(host) = request
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.split(':').next().unwrap_or(""),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Requests that change something must come from a page of this server: a browser sends
/// `Origin` on every cross-site `POST`, and it must name this host.
fn same_origin(request: &Request) -> bool {
    if request.method() == Method::GET || request.method() == Method::HEAD {
        return true;
    }
    let headers = request.headers();
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let origin_host = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    origin_host.is_some() && origin_host == host
}

fn with_cookie(request: &Request, token: &str) -> Response {
    // The address as the browser sent it, mount point included.
    let uri = request
        .extensions()
        .get::<axum::extract::OriginalUri>()
        .map_or(request.uri(), |original| &original.0);
    let rest: Vec<&str> = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|pair| !pair.is_empty() && !pair.starts_with("token="))
        .collect();
    let target = if rest.is_empty() {
        uri.path().to_owned()
    } else {
        format!("{}?{}", uri.path(), rest.join("&"))
    };
    let mut response = Redirect::to(&target).into_response();
    let cookie = format!("{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/");
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

fn refuse(status: StatusCode, why: &str) -> Response {
    let body = html::page("", "Not allowed", &format!("<p>{}</p>", html::escape(why)));
    (status, axum::response::Html(body)).into_response()
}

/// Adds the security headers to every response.
pub(crate) async fn headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    let fixed = [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::CACHE_CONTROL, "no-store"),
    ];
    for (name, value) in fixed {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beyond_loopback_needs_a_token() {
        let local: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let v6_local: SocketAddr = "[::1]:8080".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        assert_eq!(check_bind(&local, None), Ok(()));
        assert_eq!(check_bind(&v6_local, None), Ok(()));
        assert_eq!(
            check_bind(&any, None),
            Err(AccessError::ExposedWithoutToken(any))
        );
        assert_eq!(check_bind(&any, Some("0123456789abcdef")), Ok(()));
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "abcd"));
        assert!(!same("", "a"));
        assert_eq!(check_token("short"), Err(AccessError::WeakToken));
    }
}
