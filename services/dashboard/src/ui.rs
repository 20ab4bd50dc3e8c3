//! The web page, compiled into the binary: `/` plus its script, stylesheet and icon
//! under `/assets/`. Nothing is fetched from anywhere else (the Content-Security-Policy
//! says so to the browser), so the page works on a machine with no internet access.

use axum::http::{header, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// The page.
pub const INDEX_HTML: &str = include_str!("../assets/index.html");
/// The page's script: rendering, charts and the live stream.
pub const APP_JS: &str = include_str!("../assets/app.js");
/// The page's stylesheet.
pub const STYLE_CSS: &str = include_str!("../assets/style.css");
/// The page's icon.
pub const FAVICON_SVG: &str = include_str!("../assets/favicon.svg");

/// Only this origin, no inline scripts or styles.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let headers: [(HeaderName, HeaderValue); 3] = [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP)),
        (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
    ];
    (headers, body).into_response()
}

/// The page's routes.
pub fn router() -> Router {
    Router::new()
        .route("/", get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }))
        .route("/assets/app.js", get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }))
        .route("/assets/style.css", get(|| async { asset("text/css; charset=utf-8", STYLE_CSS) }))
        .route("/assets/favicon.svg", get(|| async { asset("image/svg+xml", FAVICON_SVG) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        for (name, text) in [("index.html", INDEX_HTML), ("app.js", APP_JS), ("style.css", STYLE_CSS)] {
            // The SVG namespace URI is an identifier, not a fetch.
            let text = text.replace("http://www.w3.org/2000/svg", "");
            for remote in ["http://", "https://", "//cdn", "@import", "url("] {
                assert!(!text.contains(remote), "{name} mentions {remote}");
            }
        }
        assert!(INDEX_HTML.contains(r#"src="/assets/app.js""#));
        assert!(INDEX_HTML.contains(r#"href="/assets/style.css""#));
        assert!(!APP_JS.contains("innerHTML"), "data goes into the DOM through textContent only");
    }
}
