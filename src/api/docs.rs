//! The API reference pages, served from the binary (nothing is fetched from outside).

use axum::http::{HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};

use std::sync::LazyLock;

const REDOC_BUNDLE: &str = include_str!("../../assets/redoc/redoc.standalone.js");

/// The Redocly logo Redoc's sidebar loads from a CDN; it is left out (not rendered) so
/// the page fetches nothing from outside the server.
const REDOC_CDN_LOGO: &str = r#"e?n.createElement("img",{alt:"redocly logo",onError:()=>t(!1),src:"https://cdn.redoc.ly/redoc/logo-mini.svg"}):null"#;

/// The bundle as served: the vendored file without its CDN logo.
static REDOC_JS: LazyLock<String> =
    LazyLock::new(|| REDOC_BUNDLE.replacen(REDOC_CDN_LOGO, "null", 1));

pub(super) async fn redoc_page() -> Html<&'static str> {
    Html(
        r#"<!DOCTYPE html>
<html><head><title>graphagent API</title><meta charset="utf-8"/>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body><redoc spec-url="/openapi.json"></redoc>
<script src="/redoc/redoc.standalone.js"></script></body></html>"#,
    )
}

pub(super) async fn redoc_js() -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/javascript"),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=86400"),
            ),
        ],
        REDOC_JS.as_str(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_served_redoc_bundle_loads_no_cdn_logo() {
        assert!(
            REDOC_BUNDLE.contains(REDOC_CDN_LOGO),
            "the vendored Redoc changed: find its CDN logo again"
        );
        assert!(!REDOC_JS.contains("cdn.redoc.ly"));
        assert!(!REDOC_JS.contains(r#"src:"http"#));
    }
}
