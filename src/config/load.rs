//! Turns the text of one agent file into an [`AgentFile`]: YAML parse, conversion to JSON
//! with env expansion, then validation of the agent.yaml shape. Every problem found is
//! collected with its position rather than stopping at the first.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use serde_json::{Map, Value};
use serde_yaml::Value as Yaml;

use super::env::{self, Expanded};
use super::source::{Pos, SourceMap, join_index, join_key};
use super::{ActionDecl, AgentContext, AgentFile, ConfigError, ConfigErrors};

/// Signature of the injectable environment lookup.
pub(crate) type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

const TOP_LEVEL_KEYS: &[&str] = &["agent", "context", "actions"];
const ACTION_KEYS: &[&str] = &["action", "name", "context"];

/// Loads one file's text; also returns its source map so directory loading can position
/// cross-file errors (duplicate agent names).
pub(crate) fn load_one(
    path: &Path,
    text: &str,
    env: EnvLookup<'_>,
) -> Result<(AgentFile, Arc<SourceMap>), ConfigErrors> {
    let source = Arc::new(SourceMap::build(text));
    // serde_yaml is the authority on syntax (and duplicate keys); its errors carry a location.
    let yaml: Yaml = serde_yaml::from_str(text).map_err(|e| syntax_error(path, &source, &e))?;
    let mut checker = Checker {
        file: path,
        source: &source,
        env,
        errors: Vec::new(),
    };
    let json = checker.convert(&yaml, "");
    let agent = checker.document(json, &source);
    let mut errors = checker.errors;
    match agent {
        Some(agent) if errors.is_empty() => Ok((agent, source)),
        _ => {
            // Source order reads best; unpositioned errors last.
            errors.sort_by_key(|e| (e.line.is_none(), e.line, e.column));
            Err(ConfigErrors(errors))
        }
    }
}

/// An error positioned at `key` (or its nearest existing ancestor).
pub(crate) fn error_at(
    file: &Path,
    source: &SourceMap,
    key: &str,
    message: impl Into<String>,
) -> ConfigError {
    let pos = source.locate(key);
    ConfigError {
        file: file.to_path_buf(),
        line: pos.map(|p| p.line),
        column: pos.map(|p| p.column),
        key: key.to_owned(),
        message: message.into(),
    }
}

pub(crate) fn syntax_error(
    path: &Path,
    source: &SourceMap,
    error: &serde_yaml::Error,
) -> ConfigErrors {
    let mut message = error.to_string();
    let mut pos = error.location().map(|l| Pos {
        line: l.line(),
        column: l.column(),
    });
    if let Some(p) = pos {
        // serde_yaml appends " at line L column C"; the position goes in its own fields.
        let suffix = format!(" at line {} column {}", p.line, p.column);
        if let Some(stripped) = message.strip_suffix(&suffix) {
            message.truncate(stripped.len());
        }
    }
    let mut key = pos.and_then(|pos| source.last_key_before(pos));
    // serde_yaml positions a duplicate key at its mapping; point at the repetition instead.
    // Its message is prefixed with the mapping's path, which `key` now replaces.
    if let Some(at) = message.find("duplicate entry with key")
        && let Some((dup_key, dup_pos)) = source.first_duplicate()
    {
        key = Some(dup_key);
        pos = Some(dup_pos);
        message.drain(..at);
    }
    let key = key.unwrap_or_default();
    ConfigErrors(vec![ConfigError {
        file: path.to_path_buf(),
        line: pos.map(|p| p.line),
        column: pos.map(|p| p.column),
        key: key.to_owned(),
        message: format!("invalid YAML: {message}"),
    }])
}

struct Checker<'a> {
    file: &'a Path,
    source: &'a SourceMap,
    env: EnvLookup<'a>,
    errors: Vec<ConfigError>,
}

impl Checker<'_> {
    fn error(&mut self, key: &str, message: impl Into<String>) {
        // One error per key: a value that failed env expansion should not also be reported
        // as having the wrong type.
        if self.errors.iter().any(|e| e.key == key) {
            return;
        }
        let error = error_at(self.file, self.source, key, message);
        self.errors.push(error);
    }

    /// YAML -> JSON, expanding env references in string values.
    fn convert(&mut self, yaml: &Yaml, path: &str) -> Value {
        match yaml {
            Yaml::Null => Value::Null,
            Yaml::Bool(b) => Value::Bool(*b),
            Yaml::Number(n) => {
                if let Some(i) = n.as_i64() {
                    Value::from(i)
                } else if let Some(u) = n.as_u64() {
                    Value::from(u)
                } else if let Some(f) = n.as_f64().and_then(serde_json::Number::from_f64) {
                    Value::Number(f)
                } else {
                    self.error(path, format!("unsupported number `{n}` (must be finite)"));
                    Value::Null
                }
            }
            Yaml::String(s) => match env::expand(s, self.env) {
                Ok(Expanded::Unchanged) => Value::String(s.clone()),
                Ok(Expanded::Text(text)) => Value::String(text),
                Ok(Expanded::Single(text)) if self.source.is_quoted(path) => Value::String(text),
                Ok(Expanded::Single(text)) => env::retype(&text),
                Err(message) => {
                    self.error(path, message);
                    Value::String(s.clone())
                }
            },
            Yaml::Sequence(items) => Value::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| self.convert(item, &join_index(path, i)))
                    .collect(),
            ),
            Yaml::Mapping(mapping) => {
                let mut object = Map::new();
                for (key, value) in mapping {
                    let Yaml::String(key) = key else {
                        let shown = match key {
                            Yaml::Bool(b) => b.to_string(),
                            Yaml::Number(n) => n.to_string(),
                            Yaml::Null => "null".to_owned(),
                            _ => "?".to_owned(),
                        };
                        self.error(
                            &join_key(path, &shown),
                            format!("mapping keys must be strings, found {}", yaml_kind(key)),
                        );
                        continue;
                    };
                    let child = join_key(path, key);
                    let value = self.convert(value, &child);
                    object.insert(key.clone(), value);
                }
                Value::Object(object)
            }
            Yaml::Tagged(tagged) => {
                self.error(
                    path,
                    format!("YAML tags are not supported (found `{}`)", tagged.tag),
                );
                Value::Null
            }
        }
    }

    /// Validates the top level and builds the agent; `None` when unusable.
    fn document(&mut self, json: Value, source: &Arc<SourceMap>) -> Option<AgentFile> {
        let mut top = match json {
            Value::Object(top) => top,
            Value::Null => {
                self.error("", "file is empty; expected at least `agent: <name>`");
                return None;
            }
            other => {
                self.error(
                    "",
                    format!(
                        "expected a mapping with keys agent, context, actions; found {}",
                        kind(&other)
                    ),
                );
                return None;
            }
        };
        self.unknown_keys(&top, "", TOP_LEVEL_KEYS);

        let agent = match top.remove("agent") {
            None | Some(Value::Null) => {
                self.error("agent", "missing required key `agent` (the agent's name)");
                None
            }
            Some(Value::String(name)) if is_agent_name(&name) => Some(name),
            Some(Value::String(name)) => {
                self.error(
                    "agent",
                    format!(
                        "invalid agent name `{name}`: must be non-empty and use only letters, digits, `_`, `-`, `.`, `/`"
                    ),
                );
                None
            }
            Some(other) => {
                self.error(
                    "agent",
                    format!("expected a string, found {}", kind(&other)),
                );
                None
            }
        };
        let context = self.agent_context(top.remove("context"));
        let actions = self.actions(top.remove("actions"), source);
        Some(AgentFile {
            path: self.file.to_path_buf(),
            agent: agent?,
            context: context?,
            actions: actions?,
        })
    }

    fn unknown_keys(&mut self, object: &Map<String, Value>, path: &str, allowed: &[&str]) {
        for key in object.keys() {
            if !allowed.contains(&key.as_str()) {
                self.error(
                    &join_key(path, key),
                    format!(
                        "unknown key `{key}`; expected one of: {}",
                        allowed.join(", ")
                    ),
                );
            }
        }
    }

    fn agent_context(&mut self, value: Option<Value>) -> Option<AgentContext> {
        let mut object = match value {
            None | Some(Value::Null) => return Some(AgentContext::default()),
            Some(Value::Object(object)) => object,
            Some(other) => {
                self.error(
                    "context",
                    format!("expected a mapping, found {}", kind(&other)),
                );
                return None;
            }
        };
        let alias = match object.remove("alias") {
            None | Some(Value::Null) => Some(None),
            Some(Value::String(alias)) => Some(Some(alias)),
            Some(other) => {
                self.error(
                    "context.alias",
                    format!("expected a string, found {}", kind(&other)),
                );
                None
            }
        };
        let enabled = self.enabled(object.remove("enabled").as_ref(), "context.enabled");
        Some(AgentContext {
            alias: alias?,
            enabled: enabled?,
            extra: object.into_iter().collect(),
        })
    }

    /// `enabled`: a boolean, default true.
    fn enabled(&mut self, value: Option<&Value>, key: &str) -> Option<bool> {
        match value {
            None => Some(true),
            Some(Value::Bool(b)) => Some(*b),
            Some(other) => {
                self.error(key, format!("expected a boolean, found {}", kind(other)));
                None
            }
        }
    }

    fn actions(
        &mut self,
        value: Option<Value>,
        source: &Arc<SourceMap>,
    ) -> Option<Vec<ActionDecl>> {
        let items = match value {
            None | Some(Value::Null) => return Some(Vec::new()),
            Some(Value::Array(items)) => items,
            Some(other) => {
                self.error(
                    "actions",
                    format!("expected a sequence of actions, found {}", kind(&other)),
                );
                return None;
            }
        };
        let file: Arc<Path> = Arc::from(self.file);
        let mut decls = Vec::with_capacity(items.len());
        // name -> (index, key path that set it), to report duplicates at the second use.
        let mut names: HashMap<String, usize> = HashMap::new();
        let mut ok = true;
        for (index, item) in items.into_iter().enumerate() {
            let path = join_index("actions", index);
            match self.action(item, &path) {
                Some((type_name, name, name_key, context)) => {
                    if let Some(first) = names.get(&name) {
                        let first_path = join_index("actions", *first);
                        let at = self
                            .source
                            .locate(&first_path)
                            .map(|p| format!(" at line {}", p.line))
                            .unwrap_or_default();
                        self.error(
                            &name_key,
                            format!(
                                "duplicate action name `{name}`: already used by {first_path}{at}; give one a different `name:`"
                            ),
                        );
                        ok = false;
                        continue;
                    }
                    names.insert(name.clone(), index);
                    let enabled =
                        self.enabled(context.get("enabled"), &format!("{path}.context.enabled"));
                    let Some(enabled) = enabled else {
                        ok = false;
                        continue;
                    };
                    decls.push(ActionDecl {
                        type_name,
                        name,
                        enabled,
                        context,
                        index,
                        source: Arc::clone(source),
                        file: Arc::clone(&file),
                    });
                }
                None => ok = false,
            }
        }
        ok.then_some(decls)
    }

    /// One `actions[i]` entry: (type, name, key path naming it, context object).
    fn action(&mut self, item: Value, path: &str) -> Option<(String, String, String, Value)> {
        let mut entry = match item {
            Value::Object(entry) => entry,
            other => {
                self.error(
                    path,
                    format!(
                        "expected a mapping with keys action, name, context; found {}",
                        kind(&other)
                    ),
                );
                return None;
            }
        };
        self.unknown_keys(&entry, path, ACTION_KEYS);
        let action_key = join_key(path, "action");
        let type_name = match entry.remove("action") {
            None | Some(Value::Null) => {
                self.error(
                    &action_key,
                    "missing required key `action` (the action type)",
                );
                None
            }
            Some(Value::String(t)) if !t.trim().is_empty() => Some(t),
            Some(Value::String(_)) => {
                self.error(&action_key, "action type must not be empty");
                None
            }
            Some(other) => {
                self.error(
                    &action_key,
                    format!("expected a string, found {}", kind(&other)),
                );
                None
            }
        };
        let name_key = join_key(path, "name");
        let name = match entry.remove("name") {
            None | Some(Value::Null) => type_name.as_deref().and_then(|t| {
                let name = default_name(t);
                if is_action_name(name) {
                    Some((name.to_owned(), action_key.clone()))
                } else {
                    self.error(
                        &action_key,
                        format!(
                            "default action name `{name}` (from the type) is not a valid name; set `name:` (letters, digits, `_`, `-`; at most 64)"
                        ),
                    );
                    None
                }
            }),
            Some(Value::String(name)) if is_action_name(&name) => Some((name, name_key)),
            Some(Value::String(name)) => {
                self.error(
                    &name_key,
                    format!(
                        "invalid action name `{name}`: use 1 to 64 letters, digits, `_` or `-`"
                    ),
                );
                None
            }
            Some(other) => {
                self.error(&name_key, format!("expected a string, found {}", kind(&other)));
                None
            }
        };
        let context = match entry.remove("context") {
            None | Some(Value::Null) => Some(Value::Object(Map::new())),
            Some(context @ Value::Object(_)) => Some(context),
            Some(other) => {
                self.error(
                    &join_key(path, "context"),
                    format!("expected a mapping, found {}", kind(&other)),
                );
                None
            }
        };
        let (name, name_key) = name?;
        Some((type_name?, name, name_key, context?))
    }
}

/// Default action name: the type's last path segment (`jvagent/sentdm` -> `sentdm`).
pub(crate) fn default_name(type_name: &str) -> &str {
    type_name.rsplit('/').next().unwrap_or(type_name)
}

fn is_agent_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/'))
}

fn is_action_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a sequence",
        Value::Object(_) => "a mapping",
    }
}

fn yaml_kind(value: &Yaml) -> &'static str {
    match value {
        Yaml::Null => "null",
        Yaml::Bool(_) => "a boolean",
        Yaml::Number(_) => "a number",
        Yaml::String(_) => "a string",
        Yaml::Sequence(_) => "a sequence",
        Yaml::Mapping(_) => "a mapping",
        Yaml::Tagged(_) => "a tagged value",
    }
}
