//! The host's settings, loaded once: defaults, then an optional settings file, then the
//! `GRAPHAGENT_*` environment (then the command line's flags); every invalid value is
//! reported at once, before anything is opened.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub use crate::settings_source::{
    Entry, Fields, Key, Origin, SettingError, SettingsErrors, Source,
};

use crate::auth::AuthSettings;
use crate::graph::GraphOptions;
use crate::server::ServerSettings;
use crate::telemetry::TelemetrySettings;
use crate::webhooks::WebhookSettings;

/// Body size limit for every route, unless configured otherwise.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
/// Smallest configurable body limit: a login or API-key request must still fit.
const MIN_MAX_BODY_BYTES: usize = 1024;
/// Largest configurable body limit: bodies are buffered in memory, once per connection.
const MAX_MAX_BODY_BYTES: usize = 1024 * 1024 * 1024;
/// Default listen address.
pub const DEFAULT_BIND: &str = "127.0.0.1:8000";
/// Default graph: embedded SurrealKV under `./data/graph`.
pub const DEFAULT_GRAPH_URL: &str = "surrealkv://./data/graph";

/// The host's own keys; each part declares its own next to its settings.
const HOST_KEYS: &[Key] = &[
    Key::plain("config"),
    Key::plain("bind"),
    Key::plain("graph_url"),
    Key::plain("public_base_url"),
    Key::plain("max_body_bytes"),
];

/// Every setting the host reads, in the order of the README's table.
pub fn keys() -> Vec<Key> {
    [
        HOST_KEYS,
        GraphOptions::KEYS,
        AuthSettings::KEYS,
        ServerSettings::KEYS,
        WebhookSettings::KEYS,
        TelemetrySettings::KEYS,
    ]
    .concat()
}

/// Everything the host needs to start, besides the action types.
#[derive(Debug, Clone)]
pub struct Settings {
    /// An agent file, or a directory of them (`GRAPHAGENT_CONFIG`). `None`: no agents.
    pub config_path: Option<PathBuf>,
    /// Listen address for [`crate::Host::run`] (`GRAPHAGENT_BIND`).
    pub bind: SocketAddr,
    /// Graph URL (`GRAPHAGENT_GRAPH_URL`).
    pub graph_url: String,
    /// Credentials and names for remote graphs (`GRAPHAGENT_GRAPH_*`).
    pub graph: GraphOptions,
    /// Public base URL of this server, for provider callbacks (`GRAPHAGENT_PUBLIC_BASE_URL`).
    pub public_base_url: Option<String>,
    /// Login, tokens, keys.
    pub auth: AuthSettings,
    /// Largest request body accepted (`GRAPHAGENT_MAX_BODY_BYTES`, 1 KiB to 1 GiB).
    pub max_body_bytes: usize,
    /// Client timeouts, the connection cap and the shutdown grace period.
    pub server: ServerSettings,
    /// Outbound webhooks (`GRAPHAGENT_WEBHOOK_*`).
    pub webhooks: WebhookSettings,
    /// `/metrics` (`GRAPHAGENT_METRICS_*`).
    pub telemetry: TelemetrySettings,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            config_path: None,
            bind: SocketAddr::from(([127, 0, 0, 1], 8000)),
            graph_url: DEFAULT_GRAPH_URL.to_owned(),
            graph: GraphOptions::default(),
            public_base_url: None,
            auth: AuthSettings::default(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            server: ServerSettings::default(),
            webhooks: WebhookSettings::default(),
            telemetry: TelemetrySettings::default(),
        }
    }
}

impl Settings {
    /// Defaults, then the settings file (`file`, else the one `GRAPHAGENT_SETTINGS`
    /// names, if any), then the `GRAPHAGENT_*` environment. Every invalid value is
    /// reported, each naming the variable or file key.
    pub fn load(file: Option<&Path>) -> Result<Self, SettingsErrors> {
        Self::from_source(&Self::source(file))
    }

    /// The layers [`load`](Self::load) reads, for a caller to put flags on top of
    /// ([`Source::set_flag`]) before [`from_source`](Self::from_source).
    pub fn source(file: Option<&Path>) -> Source {
        Source::layered(&keys(), file, &|name| std::env::var_os(name))
    }

    /// Settings from `source` over the defaults; every problem, not just the first.
    pub fn from_source(source: &Source) -> Result<Self, SettingsErrors> {
        let mut errors = source.problems().to_vec();
        let graph = part(GraphOptions::from_source(source), &mut errors);
        let auth = part(AuthSettings::from_source(source), &mut errors);
        let server = part(ServerSettings::from_source(source), &mut errors);
        let webhooks = part(WebhookSettings::from_source(source), &mut errors);
        let telemetry = part(TelemetrySettings::from_source(source), &mut errors);
        let defaults = Self::default();
        let mut f = Fields::new(source, HOST_KEYS);
        let settings = Self {
            config_path: f.text("config").map(PathBuf::from),
            bind: f
                .parse(
                    "bind",
                    "an IP address and port such as 127.0.0.1:8000 or [::]:8000",
                    |t| t.parse().ok(),
                )
                .unwrap_or(defaults.bind),
            graph_url: f.text("graph_url").unwrap_or(defaults.graph_url),
            graph,
            public_base_url: f.text("public_base_url"),
            auth,
            max_body_bytes: f
                .whole("max_body_bytes", "bytes")
                .unwrap_or(defaults.max_body_bytes),
            server,
            webhooks,
            telemetry,
        };
        errors.extend(f.finish());
        errors.extend(settings.host_problems(source));
        SettingsErrors::check(errors)?;
        Ok(settings)
    }

    /// Checks for settings built in code (what [`from_source`](Self::from_source) runs on
    /// what it read); problems name the environment variables.
    pub fn validate(&self) -> Result<(), SettingsErrors> {
        let source = Source::new();
        let mut errors = self.host_problems(&source);
        errors.extend(self.auth.validate(&source));
        errors.extend(self.server.validate(&source));
        errors.extend(self.webhooks.validate(&source));
        errors.extend(self.telemetry.validate(&source));
        SettingsErrors::check(errors)
    }

    /// The checks of the host's own values (the graph URL with its options).
    fn host_problems(&self, source: &Source) -> Vec<SettingError> {
        let mut errors = Vec::new();
        if !(MIN_MAX_BODY_BYTES..=MAX_MAX_BODY_BYTES).contains(&self.max_body_bytes) {
            errors.push(source.error(
                "max_body_bytes",
                format!(
                    "expected {MIN_MAX_BODY_BYTES} to {MAX_MAX_BODY_BYTES} bytes, got {}",
                    self.max_body_bytes
                ),
            ));
        }
        if let Some(url) = &self.public_base_url
            && let Err(message) = public_base_url(url)
        {
            errors.push(source.error("public_base_url", message));
        }
        errors.extend(self.graph.validate(&self.graph_url, source));
        errors
    }
}

/// A part's settings, or its defaults with its problems added to `errors` (so the host's
/// own checks still run and report theirs).
fn part<T: Default>(result: Result<T, SettingsErrors>, errors: &mut Vec<SettingError>) -> T {
    result.unwrap_or_else(|e| {
        errors.extend(e.0);
        T::default()
    })
}

/// `url` checked and without trailing slashes: `http(s)://host[:port][/path]`, no
/// credentials, query or fragment (provider callbacks are built by appending paths).
pub(crate) fn public_base_url(url: &str) -> Result<String, String> {
    const EXPECTED: &str = "expected an http(s) URL such as https://agents.example.com";
    let trimmed = url.trim().trim_end_matches('/');
    let parsed = reqwest::Url::parse(trimmed).map_err(|_| format!("{EXPECTED}, got `{url}`"))?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        // The value is not shown: it holds credentials.
        return Err(format!("{EXPECTED} without credentials in it"));
    }
    if !matches!(parsed.scheme(), "http" | "https")
        || parsed.host_str().is_none_or(str::is_empty)
        || parsed.query().is_some()
        || parsed.fragment().is_some()
    {
        return Err(format!("{EXPECTED} (no query or fragment), got `{url}`"));
    }
    Ok(trimmed.to_owned())
}

#[cfg(test)]
mod tests {
    use std::ffi::OsString;
    use std::time::Duration;

    use super::*;

    const SECRET: &str = "a-jwt-secret-long-enough-0123456789";

    fn from(file: Option<&Path>, pairs: &[(&str, &str)]) -> Result<Settings, SettingsErrors> {
        let pairs: Vec<(String, OsString)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), OsString::from(v)))
            .collect();
        let env = move |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        Settings::from_source(&Source::layered(&keys(), file, &env))
    }

    fn messages(result: Result<Settings, SettingsErrors>) -> Vec<String> {
        match result {
            Ok(s) => panic!("accepted: {s:?}"),
            Err(e) => e.0.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn defaults_load_and_are_valid() {
        let s = from(None, &[]).expect("defaults");
        assert_eq!(s.bind.to_string(), DEFAULT_BIND);
        assert_eq!(s.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
        assert!(Settings::default().validate().is_ok());
    }

    #[test]
    fn keys_are_unique_lower_case_and_documented() {
        let keys = keys();
        let readme = include_str!("../README.md");
        let example = include_str!("../graphagent.yaml.example");
        for (i, key) in keys.iter().enumerate() {
            assert!(
                key.name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{}",
                key.name
            );
            assert!(
                !keys[..i].iter().any(|k| k.name == key.name),
                "{} twice",
                key.name
            );
            let env = key.env_name();
            assert!(readme.contains(&format!("`{env}`")), "README lacks {env}");
            assert!(
                example.contains(&format!("\n# {}:", key.name)),
                "graphagent.yaml.example lacks {}",
                key.name
            );
        }
    }

    #[test]
    fn a_bad_bind_is_an_error_not_the_default() {
        let errors = messages(from(None, &[("GRAPHAGENT_BIND", "localhost")]));
        assert_eq!(
            errors,
            [
                "GRAPHAGENT_BIND: expected an IP address and port such as 127.0.0.1:8000 or \
              [::]:8000, got `localhost`"
            ]
        );
    }

    #[test]
    fn a_bad_body_limit_is_an_error_not_the_default() {
        let errors = messages(from(None, &[("GRAPHAGENT_MAX_BODY_BYTES", "1MB")]));
        assert_eq!(
            errors,
            ["GRAPHAGENT_MAX_BODY_BYTES: expected a whole number of bytes, got `1MB`"]
        );
        let errors = messages(from(None, &[("GRAPHAGENT_MAX_BODY_BYTES", "0")]));
        assert_eq!(
            errors,
            ["GRAPHAGENT_MAX_BODY_BYTES: expected 1024 to 1073741824 bytes, got 0"]
        );
    }

    #[test]
    fn every_bad_value_is_reported_at_once() {
        let errors = messages(from(
            None,
            &[
                ("GRAPHAGENT_BIND", "8000"),
                ("GRAPHAGENT_MAX_BODY_BYTES", "big"),
                ("GRAPHAGENT_JWT_TTL_SECS", "1h"),
                ("GRAPHAGENT_ADMIN_EMAIL", "ops@example.com"),
                ("GRAPHAGENT_IDLE_TIMEOUT_SECS", "0"),
                ("GRAPHAGENT_WEBHOOK_WORKER", "maybe"),
                ("GRAPHAGENT_PUBLIC_BASE_URL", "agents.example.com"),
                ("GRAPHAGENT_GRAPH_URL", "postgres://db"),
            ],
        ));
        for name in [
            "GRAPHAGENT_BIND",
            "GRAPHAGENT_MAX_BODY_BYTES",
            "GRAPHAGENT_JWT_TTL_SECS",
            "GRAPHAGENT_ADMIN_PASSWORD",
            "GRAPHAGENT_IDLE_TIMEOUT_SECS",
            "GRAPHAGENT_WEBHOOK_WORKER",
            "GRAPHAGENT_PUBLIC_BASE_URL",
            "GRAPHAGENT_GRAPH_URL",
        ] {
            assert_eq!(
                errors.iter().filter(|e| e.starts_with(name)).count(),
                1,
                "{name}: {errors:#?}"
            );
        }
        assert_eq!(errors.len(), 8, "{errors:#?}");
        assert!(errors.iter().all(|e| e.contains("expected")), "{errors:#?}");
    }

    #[test]
    fn the_file_is_read_and_the_environment_overrides_it() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("graphagent.yaml");
        std::fs::write(
            &path,
            "bind: 0.0.0.0:9000\nwebhook_timeout_secs: 10\nwebhook_retry_schedule: [1s, 1m]\n\
             max_body_bytes: 2048\njwt_secret: file-secret-file-secret-0123456789\n",
        )
        .expect("write");
        let s = from(
            Some(&path),
            &[
                ("GRAPHAGENT_BIND", "127.0.0.1:9001"),
                ("GRAPHAGENT_JWT_SECRET", SECRET),
            ],
        )
        .expect("loads");
        assert_eq!(s.bind.to_string(), "127.0.0.1:9001");
        assert_eq!(s.webhooks.timeout, Duration::from_secs(10));
        assert_eq!(
            s.webhooks.retry_schedule,
            [Duration::from_secs(1), Duration::from_secs(60)]
        );
        assert_eq!(s.max_body_bytes, 2048);
        assert_eq!(
            s.auth
                .jwt_secret
                .as_ref()
                .map(secrecy::ExposeSecret::expose_secret),
            Some(SECRET)
        );

        // A bad value in the file is named by the file and key.
        std::fs::write(&path, "max_body_bytes: lots\n").expect("write");
        let errors = messages(from(Some(&path), &[]));
        assert_eq!(
            errors,
            [format!(
                "{}:1:1: max_body_bytes: expected a whole number of bytes, got `lots`",
                path.display()
            )]
        );
    }

    #[test]
    fn an_unknown_file_key_is_refused_by_name() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("graphagent.yaml");
        std::fs::write(&path, "bind: 127.0.0.1:8000\nwebhook_timeout: 10\n").expect("write");
        let errors = messages(from(Some(&path), &[]));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with(&format!(
                "{}:2:1: webhook_timeout: unknown key",
                path.display()
            )),
            "{errors:?}"
        );
    }

    #[test]
    fn secrets_never_appear_in_debug_output() {
        let mut s = Settings::default();
        s.auth.jwt_secret = Some("jwt-secret-never-printed-0123456789".into());
        s.auth.admin_password = Some("admin-password-never-printed".into());
        s.graph.password = Some("graph-password-never-printed".into());
        let shown = format!("{s:?} {s:#?}");
        for secret in [
            "jwt-secret-never",
            "admin-password-never",
            "graph-password-never",
        ] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("REDACTED"), "{shown}");
    }

    #[test]
    fn secrets_never_appear_in_messages() {
        let short = "short-secret-7";
        let password = "pa55word-never-shown";
        let graph_password = "graph-pa55-never-shown";
        let errors = messages(from(
            None,
            &[
                ("GRAPHAGENT_JWT_SECRET", short),
                ("GRAPHAGENT_ADMIN_PASSWORD", password),
                ("GRAPHAGENT_GRAPH_PASSWORD", graph_password),
                ("GRAPHAGENT_GRAPH_URL", "ws://127.0.0.1:8000"),
                (
                    "GRAPHAGENT_PUBLIC_BASE_URL",
                    "https://user:url-pa55-never-shown@agents.example.com",
                ),
            ],
        ));
        let all = errors.join("\n");
        for name in [
            "GRAPHAGENT_JWT_SECRET",
            "GRAPHAGENT_ADMIN_EMAIL",
            "GRAPHAGENT_GRAPH_USER",
            "GRAPHAGENT_PUBLIC_BASE_URL",
        ] {
            assert!(all.contains(name), "{name} not reported: {all}");
        }
        for secret in [short, password, graph_password, "url-pa55-never-shown"] {
            assert!(!all.contains(secret), "{secret} shown: {all}");
        }
        // And a secret given where something else was expected, in the file.
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("graphagent.yaml");
        std::fs::write(&path, "admin_password: [pa55word-in-a-list, x]\n").expect("write");
        let all = messages(from(Some(&path), &[])).join("\n");
        assert!(!all.contains("pa55word-in-a-list"), "{all}");
    }

    #[test]
    fn public_base_urls_are_checked_and_trimmed() {
        assert_eq!(
            public_base_url(" https://agents.example.com/hooks/ ").as_deref(),
            Ok("https://agents.example.com/hooks")
        );
        assert_eq!(
            public_base_url("http://127.0.0.1:8000").as_deref(),
            Ok("http://127.0.0.1:8000")
        );
        for bad in [
            "agents.example.com",
            "ftp://agents.example.com",
            "https://",
            "https://agents.example.com/?a=b",
            "https://agents.example.com/#x",
            "https://u:p@agents.example.com",
        ] {
            assert!(public_base_url(bad).is_err(), "{bad}");
        }
    }
}
