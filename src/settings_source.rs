//! Where setting values come from: one map of setting name → (text, origin), layered
//! from a settings file, the `GRAPHAGENT_*` environment and command-line flags, and the
//! helpers every part parses its values with, so each problem names where it was written.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use serde_yaml::Value as Yaml;

use crate::config::load::syntax_error;
use crate::config::source::{Pos, SourceMap};

/// Prefix of every setting's environment variable.
pub const ENV_PREFIX: &str = "GRAPHAGENT_";
/// Environment variable naming the settings file (`--settings` wins over it).
pub const SETTINGS_ENV: &str = "GRAPHAGENT_SETTINGS";

/// One setting: its file key; its environment variable is the key in upper case behind
/// `GRAPHAGENT_`. A secret's value never appears in a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    /// The file key, e.g. `bind`.
    pub name: &'static str,
    /// Whether the value is a secret.
    pub secret: bool,
}

impl Key {
    /// A setting whose value may be shown in messages.
    pub const fn plain(name: &'static str) -> Self {
        Self {
            name,
            secret: false,
        }
    }

    /// A setting whose value is never shown.
    pub const fn secret(name: &'static str) -> Self {
        Self { name, secret: true }
    }

    /// Its environment variable, e.g. `GRAPHAGENT_BIND`.
    pub fn env_name(&self) -> String {
        env_name(self.name)
    }
}

fn env_name(key: &str) -> String {
    format!("{ENV_PREFIX}{}", key.to_ascii_uppercase())
}

/// Where a value was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The settings file, at the key's position when known.
    File {
        /// The file as given.
        path: PathBuf,
        /// 1-based line and column of the key.
        pos: Option<(usize, usize)>,
    },
    /// The setting's environment variable.
    Env,
    /// A command-line flag, e.g. `--bind`.
    Flag(&'static str),
}

/// One value and where it came from.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The value as written (list items joined with `,`).
    pub value: String,
    /// Where it was written.
    pub origin: Origin,
}

/// One unusable setting: where it was written and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingError {
    /// How the user wrote it: `GRAPHAGENT_BIND`, `--bind`, `graphagent.yaml:3:1: bind`.
    pub setting: String,
    /// What is wrong and what is expected; never a secret's value.
    pub message: String,
}

impl fmt::Display for SettingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.setting, self.message)
    }
}

/// Every unusable setting, not just the first; displays one per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SettingsErrors(pub Vec<SettingError>);

impl fmt::Display for SettingsErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&lines.join("\n"))
    }
}

impl SettingsErrors {
    /// `Ok(())` when there is nothing to report.
    pub fn check(errors: Vec<SettingError>) -> Result<(), Self> {
        if errors.is_empty() {
            Ok(())
        } else {
            Err(Self(errors))
        }
    }
}

/// Setting values by key, each with its origin, plus the problems met while reading them
/// (an unreadable file, an unknown key). Later layers replace earlier ones, so the
/// precedence is the order they are added in: file, then environment, then flags.
#[derive(Debug, Clone, Default)]
pub struct Source {
    values: BTreeMap<String, Entry>,
    problems: Vec<SettingError>,
}

impl Source {
    /// An empty source: every setting at its default.
    pub fn new() -> Self {
        Self::default()
    }

    /// The settings file (`file`, else the one `GRAPHAGENT_SETTINGS` names, if any) with
    /// the environment over it. `env` looks a variable up (the process environment in
    /// production, a map in tests).
    pub fn layered(
        keys: &[Key],
        file: Option<&Path>,
        env: &dyn Fn(&str) -> Option<OsString>,
    ) -> Self {
        let mut source = Self::new();
        let named = env(SETTINGS_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
        if let Some(path) = file.map(Path::to_path_buf).or(named) {
            source.overlay_file(keys, &path);
        }
        source.overlay_env(keys, env);
        source
    }

    /// Set `key` from the command-line flag `flag` (highest precedence). An empty value
    /// is not a value, as in the other layers.
    pub fn set_flag(&mut self, key: &str, flag: &'static str, value: &str) {
        self.insert(key, value.to_owned(), Origin::Flag(flag));
    }

    /// Set `key` as if from its environment variable.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.insert(key, value.to_owned(), Origin::Env);
    }

    fn insert(&mut self, key: &str, value: String, origin: Origin) {
        if !value.trim().is_empty() {
            self.values.insert(key.to_owned(), Entry { value, origin });
        }
    }

    /// The value of `key` and where it came from, if any layer set it.
    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.values.get(key)
    }

    /// Problems met while reading the layers.
    pub fn problems(&self) -> &[SettingError] {
        &self.problems
    }

    /// How the user wrote `key`: its flag, its variable, or its file key with position.
    /// Unset keys (a value set in code) are named by their variable.
    pub fn label(&self, key: &str) -> String {
        match self.values.get(key).map(|e| &e.origin) {
            Some(Origin::Flag(flag)) => (*flag).to_owned(),
            Some(Origin::File { path, pos }) => file_label(path, *pos, key),
            Some(Origin::Env) | None => env_name(key),
        }
    }

    /// A problem with `key`: `{label}: {message}`.
    pub fn error(&self, key: &str, message: impl Into<String>) -> SettingError {
        SettingError {
            setting: self.label(key),
            message: message.into(),
        }
    }

    /// `{label}: expected {expected}, got `{value}`` (the value left out for a secret).
    pub fn invalid(&self, key: &Key, expected: &str, value: &str) -> SettingError {
        self.invalid_named(key.name, key.secret, expected, value)
    }

    fn invalid_named(&self, key: &str, secret: bool, expected: &str, value: &str) -> SettingError {
        if secret {
            self.error(key, format!("expected {expected}"))
        } else {
            self.error(key, format!("expected {expected}, got `{value}`"))
        }
    }

    fn overlay_env(&mut self, keys: &[Key], env: &dyn Fn(&str) -> Option<OsString>) {
        for key in keys {
            let name = key.env_name();
            let Some(value) = env(&name) else { continue };
            match value.into_string() {
                Ok(text) => self.insert(key.name, text, Origin::Env),
                Err(_) => self.problems.push(SettingError {
                    setting: name,
                    message: "expected UTF-8 text".to_owned(),
                }),
            }
        }
    }

    fn overlay_file(&mut self, keys: &[Key], path: &Path) {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) => {
                self.problems.push(SettingError {
                    setting: path.display().to_string(),
                    message: format!("cannot read the settings file: {e}"),
                });
                return;
            }
        };
        let positions = SourceMap::build(&text);
        let yaml: Yaml = match serde_yaml::from_str(&text) {
            Ok(yaml) => yaml,
            Err(e) => {
                self.problems
                    .extend(syntax_error(path, &positions, &e).iter().map(|e| {
                        let pos = e.line.map(|l| (l, e.column.unwrap_or(1)));
                        SettingError {
                            setting: file_label(path, pos, &e.key),
                            message: e.message.clone(),
                        }
                    }));
                return;
            }
        };
        let map = match yaml {
            Yaml::Mapping(map) => map,
            // An empty file (or one of comments only) sets nothing.
            Yaml::Null => return,
            _ => {
                self.problems.push(SettingError {
                    setting: path.display().to_string(),
                    message: "expected a mapping of settings (`key: value` lines)".to_owned(),
                });
                return;
            }
        };
        for (name, value) in map {
            let Yaml::String(name) = name else {
                self.problems.push(SettingError {
                    setting: path.display().to_string(),
                    message: "expected text keys (setting names)".to_owned(),
                });
                continue;
            };
            let pos = positions
                .get(&name)
                .map(|Pos { line, column }| (line, column));
            let label = file_label(path, pos, &name);
            let Some(key) = keys.iter().find(|k| k.name == name) else {
                self.problems.push(SettingError {
                    setting: label,
                    message: unknown_key_message(keys, &name),
                });
                continue;
            };
            match file_value(value) {
                Ok(Some(text)) => self.insert(
                    key.name,
                    text,
                    Origin::File {
                        path: path.to_path_buf(),
                        pos,
                    },
                ),
                Ok(None) => {}
                Err(kind) => self.problems.push(SettingError {
                    setting: label,
                    message: format!("expected a single value or a list of them, got {kind}"),
                }),
            }
        }
    }
}

fn file_label(path: &Path, pos: Option<(usize, usize)>, key: &str) -> String {
    let mut label = path.display().to_string();
    if let Some((line, column)) = pos {
        label.push_str(&format!(":{line}:{column}"));
    }
    if !key.is_empty() {
        label.push_str(": ");
        label.push_str(key);
    }
    label
}

fn unknown_key_message(keys: &[Key], name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    let bare = lower.strip_prefix("graphagent_").unwrap_or(&lower);
    if bare != name && keys.iter().any(|k| k.name == bare) {
        return format!(
            "unknown key; file keys are the variable names in lower case without \
             {ENV_PREFIX}: write `{bare}`"
        );
    }
    "unknown key; expected a setting name such as `bind` (every key is listed in \
     graphagent.yaml.example)"
        .to_owned()
}

/// A file value as setting text: scalars as written, a list of scalars joined with `,`,
/// `null` as unset. `Err` names the kind of value that cannot be a setting.
fn file_value(value: Yaml) -> Result<Option<String>, &'static str> {
    fn scalar(value: &Yaml) -> Result<String, &'static str> {
        match value {
            Yaml::String(s) => Ok(s.clone()),
            Yaml::Number(n) => Ok(n.to_string()),
            Yaml::Bool(b) => Ok(b.to_string()),
            Yaml::Sequence(_) => Err("a nested list"),
            Yaml::Mapping(_) => Err("a mapping"),
            Yaml::Null => Err("an empty list item"),
            Yaml::Tagged(_) => Err("a tagged value"),
        }
    }
    match value {
        Yaml::Null => Ok(None),
        Yaml::Sequence(items) => Ok(Some(
            items
                .iter()
                .map(scalar)
                .collect::<Result<Vec<_>, _>>()?
                .join(","),
        )),
        other => scalar(&other).map(Some),
    }
}

/// Reads values from a [`Source`] into typed settings, collecting every problem. A value
/// that does not parse leaves the setting at its default and is reported.
pub struct Fields<'a> {
    source: &'a Source,
    keys: &'a [Key],
    errors: Vec<SettingError>,
}

impl<'a> Fields<'a> {
    /// Start reading `source` for the settings `keys` declares (which of them are
    /// secrets: their values never appear in a message).
    pub fn new(source: &'a Source, keys: &'a [Key]) -> Self {
        Self {
            source,
            keys,
            errors: Vec::new(),
        }
    }

    /// The source being read.
    pub fn source(&self) -> &'a Source {
        self.source
    }

    /// The text of `key`, trimmed, if set.
    pub fn text(&self, key: &str) -> Option<String> {
        self.source.get(key).map(|e| e.value.trim().to_owned())
    }

    /// `key` parsed by `parse`; `expected` says what it should look like.
    pub fn parse<T>(
        &mut self,
        key: &str,
        expected: &str,
        parse: impl FnOnce(&str) -> Option<T>,
    ) -> Option<T> {
        let text = self.text(key)?;
        let parsed = parse(&text);
        if parsed.is_none() {
            // A key the part did not declare is treated as a secret: better a message
            // without the value than a secret in a log.
            let secret = self
                .keys
                .iter()
                .find(|k| k.name == key)
                .is_none_or(|k| k.secret);
            let error = self.source.invalid_named(key, secret, expected, &text);
            self.errors.push(error);
        }
        parsed
    }

    /// `key` as a whole number (`unit` names what it counts, e.g. `seconds`).
    pub fn whole<T: std::str::FromStr>(&mut self, key: &str, unit: &str) -> Option<T> {
        let expected = format!("a whole number of {unit}");
        self.parse(key, &expected, |t| t.parse().ok())
    }

    /// `key` as `true` / `false` (also `1`/`0`, `yes`/`no`, `on`/`off`).
    pub fn flag(&mut self, key: &str) -> Option<bool> {
        self.parse(key, "true or false", |t| {
            match t.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Some(true),
                "false" | "0" | "no" | "off" => Some(false),
                _ => None,
            }
        })
    }

    /// `key` as a comma-separated list, empty items dropped.
    pub fn list(&self, key: &str) -> Option<Vec<String>> {
        self.text(key).map(|t| {
            t.split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect()
        })
    }

    /// Report a problem found by a caller's own check.
    pub fn push(&mut self, error: SettingError) {
        self.errors.push(error);
    }

    /// Every problem found.
    pub fn finish(self) -> Vec<SettingError> {
        self.errors
    }

    /// `value` read from the source, if neither reading it nor `validate` found a
    /// problem; otherwise every problem.
    pub fn checked<T>(
        self,
        value: T,
        validate: impl FnOnce(&T) -> Vec<SettingError>,
    ) -> Result<T, SettingsErrors> {
        let mut errors = self.errors;
        errors.extend(validate(&value));
        SettingsErrors::check(errors)?;
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEYS: &[Key] = &[
        Key::plain("bind"),
        Key::plain("webhook_retry_schedule"),
        Key::secret("jwt_secret"),
    ];

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> + use<> {
        let pairs: Vec<(String, OsString)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), OsString::from(v)))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(file.path(), text).expect("write");
        file
    }

    #[test]
    fn later_layers_win_and_labels_name_the_origin() {
        let f = file("bind: 127.0.0.1:1\nwebhook_retry_schedule: [5s, 5m]\n");
        let mut source = Source::layered(
            KEYS,
            Some(f.path()),
            &env(&[("GRAPHAGENT_BIND", "127.0.0.1:2")]),
        );
        assert!(source.problems().is_empty(), "{:?}", source.problems());
        assert_eq!(
            source.get("bind").map(|e| e.value.as_str()),
            Some("127.0.0.1:2")
        );
        assert_eq!(source.label("bind"), "GRAPHAGENT_BIND");
        assert_eq!(
            source
                .get("webhook_retry_schedule")
                .map(|e| e.value.as_str()),
            Some("5s,5m")
        );
        assert_eq!(
            source.label("webhook_retry_schedule"),
            format!("{}:2:1: webhook_retry_schedule", f.path().display())
        );
        source.set_flag("bind", "--bind", "127.0.0.1:3");
        assert_eq!(source.label("bind"), "--bind");
        // Unset: named by its variable.
        assert_eq!(source.label("jwt_secret"), "GRAPHAGENT_JWT_SECRET");
    }

    #[test]
    fn empty_values_are_unset_in_every_layer() {
        let f = file("bind: ''\njwt_secret: ~\n");
        let source = Source::layered(
            KEYS,
            Some(f.path()),
            &env(&[("GRAPHAGENT_WEBHOOK_RETRY_SCHEDULE", "")]),
        );
        assert!(source.problems().is_empty(), "{:?}", source.problems());
        assert!(source.get("bind").is_none());
        assert!(source.get("jwt_secret").is_none());
        assert!(source.get("webhook_retry_schedule").is_none());
    }

    #[test]
    fn the_settings_variable_names_the_file_and_an_argument_wins_over_it() {
        let named = file("bind: 127.0.0.1:1\n");
        let given = file("bind: 127.0.0.1:2\n");
        let path = named.path().to_str().expect("utf-8 path");
        let vars = env(&[("GRAPHAGENT_SETTINGS", path)]);
        let source = Source::layered(KEYS, None, &vars);
        assert_eq!(
            source.get("bind").map(|e| e.value.as_str()),
            Some("127.0.0.1:1")
        );
        let source = Source::layered(KEYS, Some(given.path()), &vars);
        assert_eq!(
            source.get("bind").map(|e| e.value.as_str()),
            Some("127.0.0.1:2")
        );
    }

    #[test]
    fn file_problems_are_each_reported_with_their_position() {
        let f = file("bind: 127.0.0.1:1\nbnid: x\nGRAPHAGENT_JWT_SECRET: s\njwt_secret: {a: b}\n");
        let source = Source::layered(KEYS, Some(f.path()), &env(&[]));
        let shown: Vec<String> = source.problems().iter().map(ToString::to_string).collect();
        let at = |line: usize, key: &str| format!("{}:{line}:1: {key}: ", f.path().display());
        assert_eq!(shown.len(), 3, "{shown:?}");
        assert!(shown[0].starts_with(&at(2, "bnid")), "{shown:?}");
        assert!(shown[0].contains("unknown key"), "{shown:?}");
        assert!(
            shown[1].starts_with(&at(3, "GRAPHAGENT_JWT_SECRET")),
            "{shown:?}"
        );
        assert!(shown[1].contains("write `jwt_secret`"), "{shown:?}");
        assert!(shown[2].starts_with(&at(4, "jwt_secret")), "{shown:?}");
        assert!(shown[2].ends_with("got a mapping"), "{shown:?}");
        // The good line still counts.
        assert_eq!(
            source.get("bind").map(|e| e.value.as_str()),
            Some("127.0.0.1:1")
        );
    }

    #[test]
    fn unreadable_and_malformed_files_are_reported() {
        let dir = tempfile::tempdir().expect("dir");
        let missing = dir.path().join("nope.yaml");
        let source = Source::layered(KEYS, Some(&missing), &env(&[]));
        assert_eq!(source.problems().len(), 1);
        assert!(
            source.problems()[0]
                .message
                .starts_with("cannot read the settings file")
        );

        let f = file("bind: [unclosed\n");
        let source = Source::layered(KEYS, Some(f.path()), &env(&[]));
        assert_eq!(source.problems().len(), 1, "{:?}", source.problems());
        assert!(source.problems()[0].message.starts_with("invalid YAML"));

        let f = file("- bind\n");
        let source = Source::layered(KEYS, Some(f.path()), &env(&[]));
        assert!(source.problems()[0].message.contains("expected a mapping"));
    }

    #[test]
    fn a_secret_is_never_shown_in_a_message() {
        let mut source = Source::new();
        source.set_env("jwt_secret", "hunter2-hunter2");
        let e = source.invalid(
            &Key::secret("jwt_secret"),
            "at least 32 characters",
            "hunter2-hunter2",
        );
        assert_eq!(
            e.to_string(),
            "GRAPHAGENT_JWT_SECRET: expected at least 32 characters"
        );
        source.set_env("bind", "nowhere");
        let e = source.invalid(&Key::plain("bind"), "IP:PORT", "nowhere");
        assert_eq!(
            e.to_string(),
            "GRAPHAGENT_BIND: expected IP:PORT, got `nowhere`"
        );
    }

    #[test]
    fn fields_parse_or_report() {
        let mut source = Source::new();
        source.set_env("a", " 12 ");
        source.set_env("b", "twelve");
        source.set_env("c", "Yes");
        source.set_env("d", "maybe");
        source.set_env("e", "x, ,y,");
        let keys = ["a", "b", "c", "d", "e"].map(Key::plain);
        let mut f = Fields::new(&source, &keys);
        assert_eq!(f.whole::<u64>("a", "seconds"), Some(12));
        assert_eq!(f.whole::<u64>("b", "seconds"), None);
        assert_eq!(f.flag("c"), Some(true));
        assert_eq!(f.flag("d"), None);
        assert_eq!(f.list("e"), Some(vec!["x".to_owned(), "y".to_owned()]));
        assert_eq!(f.whole::<u64>("unset", "seconds"), None);
        let errors: Vec<String> = f.finish().iter().map(ToString::to_string).collect();
        assert_eq!(
            errors,
            [
                "GRAPHAGENT_B: expected a whole number of seconds, got `twelve`",
                "GRAPHAGENT_D: expected true or false, got `maybe`"
            ]
        );
    }
}
