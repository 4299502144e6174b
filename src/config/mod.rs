//! agent.yaml loading: parsing, env expansion, source positions for errors.
//!
//! One file declares one agent and its actions; a config path may also be a directory of
//! such files. Every problem is reported as `file:line:column: key: message`, and all of
//! them are collected so a user fixes a file in one pass.

mod env;
mod error;
pub(crate) mod load;
pub(crate) mod source;

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub use error::{ConfigError, ConfigErrors};
use load::EnvLookup;
use source::{SourceMap, join_key};

/// One loaded agent file.
#[derive(Clone, Debug)]
pub struct AgentFile {
    /// The file it was loaded from (as given, or joined onto the config directory).
    pub path: PathBuf,
    /// The agent's name (`agent:`), e.g. `acme/notifier`.
    pub agent: String,
    /// The agent-level `context:`.
    pub context: AgentContext,
    /// The declared actions, in file order.
    pub actions: Vec<ActionDecl>,
}

/// The agent-level `context:` mapping.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentContext {
    /// Display name for the agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    /// Whether the agent runs at all; default true.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// All other keys, kept for the host and actions to read.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

fn default_true() -> bool {
    true
}

impl Default for AgentContext {
    fn default() -> Self {
        Self {
            alias: None,
            enabled: true,
            extra: BTreeMap::new(),
        }
    }
}

/// One entry of `actions:`, with what is needed to report errors at its keys later.
#[derive(Clone, Debug)]
pub struct ActionDecl {
    /// The `action:` value as written (aliases are resolved by the host, not here).
    pub type_name: String,
    /// `name:`, or by default the type name's last `/` segment; unique within the agent.
    pub name: String,
    /// `context.enabled`, default true (the key also stays in `context`).
    pub enabled: bool,
    /// The env-expanded action context as a JSON object (`{}` when absent).
    pub context: serde_json::Value,
    /// Position in `actions`.
    pub index: usize,
    source: Arc<SourceMap>,
    file: Arc<Path>,
}

impl ActionDecl {
    /// Deserializes the context into an action's typed config (which should use
    /// `#[serde(deny_unknown_fields)]`). Errors name file, line, column and the full key
    /// path, e.g. `agent.yaml:7:7: actions[0].context.timeout: invalid type: string "x",
    /// expected u64`.
    /// `enabled` is the host's key (see [`ActionDecl::enabled`]) and is not passed on.
    pub fn typed<C: DeserializeOwned>(&self) -> Result<C, ConfigError> {
        let mut context = self.context.clone();
        if let Some(map) = context.as_object_mut() {
            map.remove("enabled");
        }
        serde_path_to_error::deserialize(&context).map_err(|error| {
            let mut key = format!("{}.context", self.key_prefix());
            for segment in error.path() {
                match segment {
                    serde_path_to_error::Segment::Seq { index } => {
                        key = source::join_index(&key, *index);
                    }
                    serde_path_to_error::Segment::Map { key: k } => key = join_key(&key, k),
                    serde_path_to_error::Segment::Enum { variant } => {
                        key = join_key(&key, variant);
                    }
                    serde_path_to_error::Segment::Unknown => key = join_key(&key, "?"),
                }
            }
            let message = error.into_inner().to_string();
            // serde reports unknown and missing fields at the parent; name the field itself
            // (its position falls back to the parent when it is not in the file).
            if let Some(field) = quoted_field(&message, "unknown field `")
                .or_else(|| quoted_field(&message, "missing field `"))
                && !key.ends_with(&format!(".{field}"))
            {
                key = join_key(&key, field);
            }
            load::error_at(&self.file, &self.source, &key, message)
        })
    }

    /// An error positioned at `key` under this action (`"context.retries"`, `"action"`,
    /// `"name"`; `""` for the entry itself). Falls back to the nearest existing parent
    /// key's position when the exact key is not in the file.
    pub fn error_at(&self, key: &str, message: impl Into<String>) -> ConfigError {
        let prefix = self.key_prefix();
        let full = if key.is_empty() {
            prefix
        } else if key.starts_with('[') {
            format!("{prefix}{key}")
        } else {
            join_key(&prefix, key)
        };
        load::error_at(&self.file, &self.source, &full, message)
    }

    /// The file this action was declared in.
    pub fn file(&self) -> &Path {
        &self.file
    }

    fn key_prefix(&self) -> String {
        source::join_index("actions", self.index)
    }
}

/// `field` from a serde message like "unknown field `field`, expected ...".
fn quoted_field<'a>(message: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = message.strip_prefix(prefix)?;
    rest.split('`').next()
}

fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Loads a file, or every `*.yaml` / `*.yml` file of a directory (sorted by name, not
/// recursive, hidden files skipped), expanding env references from the process env.
/// IO errors are reported as [`ConfigError`]s too.
pub fn load_path(path: &Path) -> Result<Vec<AgentFile>, ConfigErrors> {
    load_path_with_env(path, &process_env)
}

/// [`load_path`] with an injectable env lookup.
pub fn load_path_with_env(
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<AgentFile>, ConfigErrors> {
    let io_error = |file: &Path, what: &str, e: std::io::Error| {
        ConfigErrors::from(ConfigError::new(file, "", format!("{what}: {e}")))
    };
    let meta = fs::metadata(path).map_err(|e| io_error(path, "cannot read config path", e))?;
    let files = if meta.is_dir() {
        let mut files = Vec::new();
        for entry in fs::read_dir(path).map_err(|e| io_error(path, "cannot list directory", e))? {
            let entry = entry.map_err(|e| io_error(path, "cannot list directory", e))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let is_yaml = name.ends_with(".yaml") || name.ends_with(".yml");
            if is_yaml && !name.starts_with('.') && entry.path().is_file() {
                files.push(entry.path());
            }
        }
        files.sort();
        if files.is_empty() {
            return Err(
                ConfigError::new(path, "", "no *.yaml or *.yml agent files in directory").into(),
            );
        }
        files
    } else {
        vec![path.to_path_buf()]
    };
    load_files(&files, env)
}

fn load_files(files: &[PathBuf], env: EnvLookup<'_>) -> Result<Vec<AgentFile>, ConfigErrors> {
    let mut agents = Vec::with_capacity(files.len());
    let mut errors = Vec::new();
    // agent name -> where it was first declared, for the duplicate message.
    let mut seen: HashMap<String, String> = HashMap::new();
    for file in files {
        let text = match fs::read_to_string(file) {
            Ok(text) => text,
            Err(e) => {
                errors.push(ConfigError::new(file, "", format!("cannot read file: {e}")));
                continue;
            }
        };
        match load::load_one(file, &text, env) {
            Ok((agent, source)) => {
                let here = match source.get("agent") {
                    Some(p) => format!("{}:{}:{}", file.display(), p.line, p.column),
                    None => file.display().to_string(),
                };
                if let Some(first) = seen.get(&agent.agent) {
                    errors.push(load::error_at(
                        file,
                        &source,
                        "agent",
                        format!(
                            "duplicate agent `{}`: already declared at {first}",
                            agent.agent
                        ),
                    ));
                    continue;
                }
                seen.insert(agent.agent.clone(), here);
                agents.push(agent);
            }
            Err(ConfigErrors(file_errors)) => errors.extend(file_errors),
        }
    }
    if errors.is_empty() {
        Ok(agents)
    } else {
        Err(ConfigErrors(errors))
    }
}

/// Loads one agent file from text (tests, embedded defaults); `path` is used only in
/// messages. Env references are expanded from the process env.
pub fn load_str(path: &Path, text: &str) -> Result<AgentFile, ConfigErrors> {
    load_str_with_env(path, text, &process_env)
}

/// [`load_str`] with an injectable env lookup, so tests need not mutate the process env.
pub fn load_str_with_env(
    path: &Path,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<AgentFile, ConfigErrors> {
    load::load_one(path, text, env).map(|(agent, _)| agent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const EXAMPLE: &str = "\
agent: acme/notifier
context: { alias: Notifier, enabled: true, team: ops }
actions:
  - action: sentdm_broadcast
    name: sentdm
    context:
      enabled: true
      sandbox: true
      timeout: ${SENTDM_TIMEOUT:-30}
  - action: jvagent/sentdm_broadcast_action
    context: { enabled: false }
  - action: echo
";

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn load(text: &str) -> Result<AgentFile, ConfigErrors> {
        load_str_with_env(Path::new("agent.yaml"), text, &no_env)
    }

    /// The single error of a failed load.
    fn only_error(text: &str) -> ConfigError {
        let errors = load(text).expect_err("load should fail").0;
        assert_eq!(errors.len(), 1, "{errors:?}");
        errors.into_iter().next().expect("one error")
    }

    fn position(e: &ConfigError) -> (Option<usize>, Option<usize>) {
        (e.line, e.column)
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct SentDm {
        #[serde(default)]
        sandbox: bool,
        timeout: u64,
        #[serde(default)]
        retry: Option<Retry>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Retry {
        count: u32,
    }

    #[test]
    fn loads_the_example() {
        let file = load(EXAMPLE).expect("valid");
        assert_eq!(file.path, Path::new("agent.yaml"));
        assert_eq!(file.agent, "acme/notifier");
        assert_eq!(file.context.alias.as_deref(), Some("Notifier"));
        assert!(file.context.enabled);
        assert_eq!(file.context.extra.get("team"), Some(&json!("ops")));
        let names: Vec<_> = file.actions.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["sentdm", "sentdm_broadcast_action", "echo"]);
        let first = &file.actions[0];
        assert_eq!(first.type_name, "sentdm_broadcast");
        assert_eq!(first.index, 0);
        assert!(first.enabled);
        assert_eq!(first.file(), Path::new("agent.yaml"));
        assert_eq!(
            first.context,
            json!({"enabled": true, "sandbox": true, "timeout": 30})
        );
        let typed: SentDm = first.typed().expect("typed");
        assert_eq!(typed.timeout, 30);
        // Default name is the namespaced type's last segment; `enabled` stays in context.
        let second = &file.actions[1];
        assert_eq!(second.type_name, "jvagent/sentdm_broadcast_action");
        assert!(!second.enabled);
        assert_eq!(second.context, json!({"enabled": false}));
        assert_eq!(file.actions[2].context, json!({}));
        assert!(file.actions[2].enabled);
    }

    #[test]
    fn minimal_file_defaults() {
        let file = load("agent: solo\n").expect("valid");
        assert_eq!(file.context, AgentContext::default());
        assert!(file.actions.is_empty());
        let context: AgentContext = serde_json::from_value(json!({"x": 1})).expect("deserialize");
        assert!(context.enabled);
        assert_eq!(context.extra.get("x"), Some(&json!(1)));
    }

    #[test]
    fn syntax_error_has_position() {
        let e = only_error("agent: x\nactions:\n  - action: a\n    context: {a: 1\n");
        assert!(e.message.starts_with("invalid YAML: "), "{e}");
        assert!(e.message.contains("while parsing a flow mapping"), "{e}");
        assert_eq!(e.line, Some(5), "{e}");
        assert!(e.column.is_some());
        assert_eq!(e.key, "actions[0].context.a");

        let e = only_error("agent: x\n  bad: indent\n");
        assert_eq!(e.line, Some(2), "{e}");
        assert_eq!(e.key, "agent");
        assert!(e.to_string().starts_with("agent.yaml:2:"), "{e}");
    }

    #[test]
    fn duplicate_yaml_key_is_reported() {
        let e = only_error("agent: x\nagent: y\n");
        assert_eq!(
            e.message,
            "invalid YAML: duplicate entry with key \"agent\""
        );
        assert_eq!(
            (e.key.as_str(), e.line, e.column),
            ("agent", Some(2), Some(1))
        );
        let e = only_error("agent: x\nactions:\n  - action: a\n    context: {k: 1, k: 2}\n");
        assert_eq!(e.key, "actions[0].context.k", "{e}");
        assert_eq!((e.line, e.column), (Some(4), Some(21)), "{e}");
    }

    #[test]
    fn unknown_top_level_key() {
        let e = only_error("agent: x\nactoins: []\n");
        assert_eq!(e.key, "actoins");
        assert_eq!(position(&e), (Some(2), Some(1)));
        assert_eq!(
            e.to_string(),
            "agent.yaml:2:1: actoins: unknown key `actoins`; expected one of: agent, context, actions"
        );
    }

    #[test]
    fn unknown_action_entry_key() {
        let e = only_error("agent: x\nactions:\n  - action: a\n    contxt: {}\n");
        assert_eq!(e.key, "actions[0].contxt");
        assert_eq!(position(&e), (Some(4), Some(5)));
        assert!(e.message.contains("expected one of: action, name, context"));
    }

    #[test]
    fn missing_agent_and_missing_action() {
        let e = only_error("context: {}\n");
        assert_eq!(e.key, "agent");
        assert_eq!(position(&e), (Some(1), Some(1)));
        assert!(e.message.contains("missing required key `agent`"));

        let e = only_error("agent: x\nactions:\n  - name: n\n");
        assert_eq!(e.key, "actions[0].action");
        assert_eq!(position(&e), (Some(3), Some(5)));

        let e = only_error("");
        assert_eq!(position(&e), (None, None));
        assert_eq!(
            e.to_string(),
            "agent.yaml: file is empty; expected at least `agent: <name>`"
        );
    }

    #[test]
    fn wrong_types_in_the_shape() {
        let e = only_error("agent: [x]\n");
        assert_eq!((e.key.as_str(), e.line), ("agent", Some(1)));
        assert!(e.message.contains("expected a string, found a sequence"));
        let e = only_error("agent: 'bad name!'\n");
        assert!(e.message.contains("invalid agent name"));
        let e = only_error("agent: x\nactions: {}\n");
        assert_eq!((e.key.as_str(), e.line), ("actions", Some(2)));
        let e = only_error("agent: x\ncontext: {enabled: 'yes'}\n");
        assert_eq!(e.key, "context.enabled");
        assert_eq!(position(&e), (Some(2), Some(11)));
        let e = only_error("agent: x\nactions:\n  - action: a\n    context: {enabled: 1}\n");
        assert_eq!(e.key, "actions[0].context.enabled");
        assert_eq!(position(&e), (Some(4), Some(15)));
        let e = only_error("agent: x\nactions:\n  - action: a\n    name: 'has space'\n");
        assert_eq!((e.key.as_str(), e.line), ("actions[0].name", Some(4)));
        let e = only_error("agent: x\nactions:\n  - action: a.b\n");
        assert_eq!((e.key.as_str(), e.line), ("actions[0].action", Some(3)));
        assert!(e.message.contains("set `name:`"), "{e}");
    }

    #[test]
    fn all_errors_are_collected_in_source_order() {
        let errors = load("bogus: 1\nagent: x\nactions:\n  - action: a\n    extra: 1\n  - {}\n")
            .expect_err("invalid")
            .0;
        let keys: Vec<_> = errors.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["bogus", "actions[0].extra", "actions[1].action"]);
        let all = ConfigErrors(errors).to_string();
        assert_eq!(all.lines().count(), 3, "{all}");
    }

    #[test]
    fn duplicate_action_names() {
        let text = "agent: x\nactions:\n  - action: a/echo\n  - action: echo\n  - action: b\n    name: echo\n";
        let errors = load(text).expect_err("duplicates").0;
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert_eq!(errors[0].key, "actions[1].action");
        assert_eq!(position(&errors[0]), (Some(4), Some(5)));
        assert!(
            errors[0]
                .message
                .contains("duplicate action name `echo`: already used by actions[0] at line 3"),
            "{}",
            errors[0]
        );
        assert_eq!(errors[1].key, "actions[2].name");
        assert_eq!(position(&errors[1]), (Some(6), Some(5)));
    }

    #[test]
    fn typed_wrong_type_names_the_key() {
        let text = "agent: x\nactions:\n  - action: sentdm\n    context:\n      enabled: true\n      # comment\n      timeout: x\n";
        let file = load(text).expect("valid shape");
        let e = file.actions[0].typed::<SentDm>().expect_err("bad type");
        assert_eq!(
            e.to_string(),
            "agent.yaml:7:7: actions[0].context.timeout: invalid type: string \"x\", expected u64"
        );
    }

    #[test]
    fn typed_unknown_nested_and_missing_fields() {
        let text = "\
agent: x
actions:
  - action: sentdm
    context:
      enabled: true
      timeout: 5
      retry: {count: 1, cuont: 2}
      sandbx: true
";
        let file = load(text).expect("valid shape");
        let e = file.actions[0].typed::<SentDm>().expect_err("unknown");
        assert_eq!(e.key, "actions[0].context.retry.cuont");
        assert_eq!(position(&e), (Some(7), Some(25)));
        assert!(e.message.starts_with("unknown field `cuont`"), "{e}");

        let text = "agent: x\nactions:\n  - action: sentdm\n    context:\n      timeout: 5\n      sandbx: true\n";
        let file = load(text).expect("valid shape");
        let e = file.actions[0].typed::<SentDm>().expect_err("unknown");
        assert_eq!(e.key, "actions[0].context.sandbx");
        assert_eq!(position(&e), (Some(6), Some(7)));

        let text = "agent: x\nactions:\n  - action: sentdm\n    context:\n      sandbox: true\n";
        let file = load(text).expect("valid shape");
        let e = file.actions[0].typed::<SentDm>().expect_err("missing");
        assert_eq!(e.key, "actions[0].context.timeout");
        assert_eq!(position(&e), (Some(4), Some(5)));
        assert_eq!(e.message, "missing field `timeout`");

        // No context at all: the position falls back to the entry.
        let file = load("agent: x\nactions:\n  - action: sentdm\n").expect("valid");
        let e = file.actions[0].typed::<SentDm>().expect_err("missing");
        assert_eq!(position(&e), (Some(3), Some(5)));
    }

    #[test]
    fn error_at_and_fallbacks() {
        let text = "agent: x\nactions:\n  - action: a\n  - action: b\n    context:\n      webhook_retry_count: 9\n";
        let file = load(text).expect("valid");
        let b = &file.actions[1];
        let e = b.error_at("context.webhook_retry_count", "must be between 1 and 5");
        assert_eq!(
            e.to_string(),
            "agent.yaml:6:7: actions[1].context.webhook_retry_count: must be between 1 and 5"
        );
        let e = b.error_at("action", "unknown action type `b`; known: a, c");
        assert_eq!(position(&e), (Some(4), Some(5)));
        assert_eq!(e.key, "actions[1].action");
        // Absent keys fall back to the nearest parent that exists.
        let e = b.error_at("context.missing.deeper", "m");
        assert_eq!(
            (e.key.as_str(), e.line, e.column),
            ("actions[1].context.missing.deeper", Some(5), Some(5))
        );
        let e = b.error_at("name", "m");
        assert_eq!(position(&e), (Some(4), Some(5)));
        let e = file.actions[0].error_at("context.x", "m");
        assert_eq!(position(&e), (Some(3), Some(5)));
        let e = b.error_at("", "m");
        assert_eq!(e.key, "actions[1]");
    }

    #[test]
    fn env_expansion_in_values() {
        let env = |name: &str| match name {
            "T" => Some("45".to_owned()),
            "FLAG" => Some("false".to_owned()),
            "NAME" => Some("acme/env-agent".to_owned()),
            "SNEAKY" => Some("${T}".to_owned()),
            _ => None,
        };
        let text = "\
agent: ${NAME}
actions:
  - action: a
    context:
      default_int: ${MISSING:-30}
      set_int: ${T}
      flag: ${FLAG}
      on: ${MISSING:-true}
      mixed: port-${T}
      escaped: $${T} costs $$5 or $5
      sneaky: ${SNEAKY}
      quoted: \"${T}\"
      single: '${MISSING:-007}'
      list:
        - ${T}
        - x${T}
      plain: 12
      ${T}: key not expanded
";
        let file = load_str_with_env(Path::new("a.yaml"), text, &env).expect("valid");
        assert_eq!(file.agent, "acme/env-agent");
        assert_eq!(
            file.actions[0].context,
            json!({
                "default_int": 30,
                "set_int": 45,
                "flag": false,
                "on": true,
                "mixed": "port-45",
                "escaped": "${T} costs $5 or $5",
                "sneaky": "${T}",
                "quoted": "45",
                "single": "007",
                "list": [45, "x45"],
                "plain": 12,
                "${T}": "key not expanded",
            })
        );
    }

    #[test]
    fn unset_env_var_is_positioned() {
        let text =
            "agent: x\nactions:\n  - action: a\n    context:\n      token: Bearer ${API_TOKEN}\n";
        let e = only_error(text);
        assert_eq!(e.key, "actions[0].context.token");
        assert_eq!(position(&e), (Some(5), Some(7)));
        assert!(e.message.contains("`API_TOKEN` is not set"), "{e}");
        // The failed value is not reported a second time as an invalid agent name.
        let e = only_error("agent: ${AGENT}\n");
        assert_eq!((e.key.as_str(), e.line), ("agent", Some(1)));
    }

    #[test]
    fn non_string_keys_and_tags_are_errors() {
        let e = only_error("agent: x\ncontext:\n  1: one\n");
        assert_eq!(e.key, "context.1");
        assert_eq!(position(&e), (Some(3), Some(3)));
        assert!(e.message.contains("keys must be strings"));
        let e = only_error("agent: x\ncontext:\n  when: !date 2024-01-01\n");
        assert_eq!(e.key, "context.when");
        assert_eq!(position(&e), (Some(3), Some(3)));
        assert!(e.message.contains("tags are not supported"), "{e}");
    }

    /// A scratch directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default();
            let dir = std::env::temp_dir().join(format!(
                "graphagent-config-{tag}-{}-{nanos}",
                std::process::id()
            ));
            fs::create_dir_all(&dir).expect("create temp dir");
            Self(dir)
        }

        fn write(&self, name: &str, text: &str) {
            fs::write(self.0.join(name), text).expect("write");
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn directory_loading() {
        let dir = TempDir::new("ok");
        dir.write("b.yml", "agent: second\n");
        dir.write("a.yaml", "agent: first\nactions:\n  - action: echo\n");
        dir.write("notes.txt", "not yaml");
        dir.write(".hidden.yaml", "agent: [broken\n");
        fs::create_dir(dir.0.join("sub.yaml")).expect("mkdir");
        let files = load_path_with_env(&dir.0, &no_env).expect("valid");
        let agents: Vec<_> = files.iter().map(|f| f.agent.as_str()).collect();
        assert_eq!(agents, ["first", "second"]);
        assert_eq!(files[0].path, dir.0.join("a.yaml"));
        assert_eq!(files[0].actions[0].file(), dir.0.join("a.yaml"));

        // A single file path works too.
        let one = load_path(&dir.0.join("b.yml")).expect("valid");
        assert_eq!(one.len(), 1);
    }

    #[test]
    fn directory_duplicate_agents_and_errors_across_files() {
        let dir = TempDir::new("dup");
        dir.write("1.yaml", "agent: same\n");
        dir.write("2.yaml", "# second\nagent: same\n");
        dir.write("3.yaml", "agent: other\nbogus: 1\n");
        let errors = load_path_with_env(&dir.0, &no_env).expect_err("dup").0;
        assert_eq!(errors.len(), 2, "{errors:?}");
        let dup = &errors[0];
        assert_eq!(dup.file, dir.0.join("2.yaml"));
        assert_eq!(
            (dup.key.as_str(), dup.line, dup.column),
            ("agent", Some(2), Some(1))
        );
        let first = format!("{}:1:1", dir.0.join("1.yaml").display());
        assert_eq!(
            dup.message,
            format!("duplicate agent `same`: already declared at {first}")
        );
        assert_eq!(errors[1].file, dir.0.join("3.yaml"));
        assert_eq!(errors[1].key, "bogus");
    }

    #[test]
    fn io_errors_and_empty_directory() {
        let dir = TempDir::new("empty");
        let e = load_path(&dir.0).expect_err("empty").0;
        assert!(e[0].message.contains("no *.yaml"), "{e:?}");
        let missing = dir.0.join("nope.yaml");
        let e = load_path(&missing).expect_err("missing").0;
        assert_eq!(e[0].file, missing);
        assert_eq!(e[0].key, "");
        assert!(e[0].to_string().contains("cannot read config path"));
    }
}
