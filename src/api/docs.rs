//! The API reference pages, served from the binary (nothing is fetched from outside).

use axum::http::{HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};

const REDOC_JS: &str = include_str!("../../assets/redoc/redoc.standalone.js");

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
        REDOC_JS,
    )
        .into_response()
}
