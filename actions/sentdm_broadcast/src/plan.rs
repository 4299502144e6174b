//! A `send_broadcast` request parsed and validated once into a [`BroadcastPlan`]: every
//! later step (the SentDM requests, the records, the outbound event) takes the plan.

use sentdm_client::client::IdempotencyKey;
use sentdm_client::model::{Template, TemplateRef};

use crate::config::{CHANNELS, SentDmConfig};
use crate::{BroadcastRequest, MAX_RECIPIENTS, RECIPIENTS_PER_REQUEST, SentDmError, store};

/// What one `send_broadcast` call will do; nothing in it is re-read from the request.
#[derive(Debug, Clone)]
pub struct BroadcastPlan {
    /// `bc_…`: derived from the idempotency key when there is one.
    pub broadcast_id: String,
    /// Recipients, trimmed, each once, in the order given.
    pub recipients: Vec<String>,
    /// Channels (the request's or the action's default).
    pub channels: Vec<String>,
    /// Exactly one of id / name (id preferred), with the parameters.
    pub template: TemplateRef,
    pub sandbox: bool,
    /// The caller's idempotency key.
    pub idempotency_key: Option<String>,
    /// The profile the request names (sent as `x-profile-id`).
    pub profile_id: Option<String>,
    /// The profile the messages go out as: the request's, else the action's.
    pub sent_as_profile: Option<String>,
    /// SentDM requests, in order.
    pub chunks: Vec<Chunk>,
}

/// One SentDM request of a broadcast.
#[derive(Debug, Clone)]
pub struct Chunk {
    /// Position in the broadcast.
    pub index: usize,
    pub recipients: Vec<String>,
    /// `{key}` alone, `{key}-{index}`, or derived from the broadcast.
    pub key: IdempotencyKey,
}

impl BroadcastPlan {
    /// Validate `req` against the action's `config`; the first problem is an error
    /// naming its field, and nothing has been sent.
    pub fn parse(
        req: BroadcastRequest,
        config: &SentDmConfig,
        action_id: &str,
    ) -> Result<Self, SentDmError> {
        if req.to.is_empty() {
            return Err(SentDmError::invalid("to", "give at least one recipient"));
        }
        let mut recipients: Vec<String> = Vec::with_capacity(req.to.len());
        for (i, number) in req.to.iter().enumerate() {
            let n = number.trim();
            if !valid_e164(n) {
                return Err(SentDmError::invalid(
                    format!("to[{i}]"),
                    format!("`{number}` is not an E.164 phone number (+ and 7-15 digits)"),
                ));
            }
            if !recipients.iter().any(|t| t == n) {
                recipients.push(n.to_owned());
            }
        }
        if recipients.len() > MAX_RECIPIENTS {
            return Err(SentDmError::invalid(
                "to",
                format!("at most {MAX_RECIPIENTS} recipients per broadcast"),
            ));
        }
        let channels = req
            .channels
            .unwrap_or_else(|| config.default_channels.clone());
        if channels.is_empty() {
            return Err(SentDmError::invalid(
                "channels",
                "give at least one channel",
            ));
        }
        for (i, c) in channels.iter().enumerate() {
            if !CHANNELS.contains(&c.as_str()) {
                return Err(SentDmError::invalid(
                    format!("channels[{i}]"),
                    format!("unknown channel `{c}`; one of {}", CHANNELS.join(", ")),
                ));
            }
        }
        let template = template_ref(req.template.unwrap_or_default(), config)?;
        if let Some(k) = &req.idempotency_key
            && !valid_key(k)
        {
            return Err(SentDmError::invalid(
                "idempotency_key",
                "use 1 to 200 of A-Z a-z 0-9 _ -",
            ));
        }
        if req
            .profile_id
            .as_deref()
            .is_some_and(|p| p.trim().is_empty())
        {
            return Err(SentDmError::invalid("profile_id", "must not be empty"));
        }
        let broadcast_id = match &req.idempotency_key {
            Some(k) => format!(
                "bc_{}",
                store::digest(&[action_id.as_bytes(), k.as_bytes()])
                    .get(..32)
                    .unwrap_or_default()
            ),
            None => format!("bc_{}", uuid::Uuid::now_v7().simple()),
        };
        let count = recipients.len().div_ceil(RECIPIENTS_PER_REQUEST);
        let chunks = recipients
            .chunks(RECIPIENTS_PER_REQUEST)
            .enumerate()
            .map(|(index, part)| {
                let key = match &req.idempotency_key {
                    Some(k) if count == 1 => IdempotencyKey::new(k.clone()),
                    Some(k) => IdempotencyKey::new(format!("{k}-{index}")),
                    None => Ok(IdempotencyKey::derive(&[
                        action_id,
                        &broadcast_id,
                        &index.to_string(),
                    ])),
                };
                Ok(Chunk {
                    index,
                    recipients: part.to_vec(),
                    key: key.map_err(SentDmError::from)?,
                })
            })
            .collect::<Result<_, SentDmError>>()?;
        Ok(Self {
            broadcast_id,
            recipients,
            channels,
            template,
            sandbox: req.sandbox.unwrap_or(config.sandbox),
            sent_as_profile: req.profile_id.clone().or_else(|| config.profile_id.clone()),
            profile_id: req.profile_id,
            idempotency_key: req.idempotency_key,
            chunks,
        })
    }
}

/// The template to send: the request's, or the action's default when it names neither
/// id nor name (its parameters then go to the default); exactly one of id / name
/// (CONTRACT §2.2), id preferred.
fn template_ref(
    mut template: crate::TemplateInput,
    config: &SentDmConfig,
) -> Result<TemplateRef, SentDmError> {
    let given = |s: &Option<String>| {
        s.as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    if given(&template.id).is_none() && given(&template.name).is_none() {
        template.id = config.default_template_id.clone();
        template.name = config.default_template_name.clone();
    }
    let (id, name) = (given(&template.id), given(&template.name));
    if id.is_none() && name.is_none() {
        return Err(SentDmError::invalid(
            "template",
            "give template.id or template.name (no default template is configured)",
        ));
    }
    Ok(TemplateRef {
        name: if id.is_some() { None } else { name },
        id,
        parameters: template.parameters,
    })
}

/// The send's parameters against the variables SentDM says `known` declares: each
/// variable given (SentDM fails the message later otherwise), nothing it does not declare
/// (a misspelt name is a missing one). The error names both lists.
pub fn check_parameters(template: &TemplateRef, known: &Template) -> Result<(), SentDmError> {
    let missing: Vec<&str> = known
        .variables
        .iter()
        .filter(|v| !template.parameters.contains_key(v.as_str()))
        .map(String::as_str)
        .collect();
    let unknown: Vec<&str> = template
        .parameters
        .keys()
        .filter(|k| !known.variables.contains(k))
        .map(String::as_str)
        .collect();
    if missing.is_empty() && unknown.is_empty() {
        return Ok(());
    }
    let mut problems = Vec::new();
    if !missing.is_empty() {
        problems.push(format!("missing {}", missing.join(", ")));
    }
    if !unknown.is_empty() {
        problems.push(format!("unknown {}", unknown.join(", ")));
    }
    let declared = if known.variables.is_empty() {
        "none".to_owned()
    } else {
        known.variables.join(", ")
    };
    Err(SentDmError::invalid(
        "template.parameters",
        format!(
            "{} (template `{}` declares: {declared})",
            problems.join("; "),
            known.name
        ),
    ))
}

pub(crate) fn valid_e164(s: &str) -> bool {
    let digits = s.strip_prefix('+').unwrap_or("");
    (7..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

fn valid_key(k: &str) -> bool {
    (1..=200).contains(&k.len())
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TemplateInput;

    fn request(to: &[&str]) -> BroadcastRequest {
        BroadcastRequest {
            to: to.iter().map(|s| (*s).to_owned()).collect(),
            template: Some(TemplateInput {
                name: Some("order_confirmation".into()),
                ..TemplateInput::default()
            }),
            ..BroadcastRequest::default()
        }
    }

    fn invalid_field(e: SentDmError) -> String {
        match e {
            SentDmError::Invalid { field, .. } => field,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn phone_numbers() {
        assert!(valid_e164("+14155551234"));
        assert!(valid_e164("+4915112345678"));
        assert!(!valid_e164("14155551234"));
        assert!(!valid_e164("+0123456789"));
        assert!(!valid_e164("+141555"));
        assert!(valid_e164("+1415555"));
        assert!(!valid_e164("+1234567890123456"));
        assert!(!valid_e164("+1 415 555 1234"));
    }

    #[test]
    fn a_plan_dedupes_defaults_and_chunks_with_stable_keys() {
        let config = SentDmConfig::default();
        let numbers: Vec<String> = (0..250).map(|i| format!("+1415555{i:04}")).collect();
        let mut req = request(&[]);
        req.to = numbers
            .iter()
            .chain(numbers.iter().take(3))
            .cloned()
            .collect();
        req.to.push(" +14155550000 ".into());
        req.idempotency_key = Some("order-1".into());
        let plan = BroadcastPlan::parse(req.clone(), &config, "act_1").expect("valid");
        assert_eq!(plan.recipients, numbers, "trimmed, each once, in order");
        assert_eq!(plan.channels, ["sms"], "the action's default");
        assert_eq!(plan.template.name.as_deref(), Some("order_confirmation"));
        let sizes: Vec<_> = plan.chunks.iter().map(|c| c.recipients.len()).collect();
        assert_eq!(sizes, [100, 100, 50]);
        let keys: Vec<_> = plan.chunks.iter().map(|c| c.key.as_str()).collect();
        assert_eq!(keys, ["order-1-0", "order-1-1", "order-1-2"]);
        let again = BroadcastPlan::parse(req, &config, "act_1").expect("valid");
        assert_eq!(
            again.broadcast_id, plan.broadcast_id,
            "same key, same broadcast"
        );
        let one = BroadcastPlan::parse(
            BroadcastRequest {
                idempotency_key: Some("order-2".into()),
                ..request(&["+14155551234"])
            },
            &config,
            "act_1",
        )
        .expect("valid");
        assert_eq!(
            one.chunks[0].key.as_str(),
            "order-2",
            "one request: the key itself"
        );
    }

    #[test]
    fn the_template_id_wins_and_the_default_fills_in() {
        let config = SentDmConfig {
            default_template_id: Some("t-default".into()),
            ..SentDmConfig::default()
        };
        let mut req = request(&["+14155551234"]);
        req.template = Some(TemplateInput {
            id: Some(" t-1 ".into()),
            name: Some("named".into()),
            ..TemplateInput::default()
        });
        let plan = BroadcastPlan::parse(req.clone(), &config, "a").expect("valid");
        assert_eq!(
            (plan.template.id.as_deref(), plan.template.name),
            (Some("t-1"), None)
        );
        req.template = None;
        let plan = BroadcastPlan::parse(req.clone(), &config, "a").expect("valid");
        assert_eq!(plan.template.id.as_deref(), Some("t-default"));
        let bare = SentDmConfig::default();
        let e = BroadcastPlan::parse(req, &bare, "a").expect_err("no template");
        assert_eq!(invalid_field(e), "template");
    }

    #[test]
    fn parameters_must_match_the_templates_variables() {
        let known = Template {
            name: "order_confirmation".into(),
            variables: vec!["name".into(), "order_id".into()],
            ..Template::default()
        };
        let with = |pairs: &[(&str, &str)]| TemplateRef {
            id: None,
            name: Some("order_confirmation".into()),
            parameters: pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        };
        assert!(check_parameters(&with(&[("name", "Jo"), ("order_id", "1")]), &known).is_ok());
        match check_parameters(&with(&[("name", "Jo"), ("orderid", "1")]), &known) {
            Err(SentDmError::Invalid { field, message }) => {
                assert_eq!(field, "template.parameters");
                assert_eq!(
                    message,
                    "missing order_id; unknown orderid (template `order_confirmation` declares: name, order_id)"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn each_problem_names_its_field() {
        let config = SentDmConfig::default();
        let cases: Vec<(BroadcastRequest, &str)> = vec![
            (request(&[]), "to"),
            (request(&["+14155551234", "555"]), "to[1]"),
            (
                BroadcastRequest {
                    channels: Some(vec!["sms".into(), "fax".into()]),
                    ..request(&["+14155551234"])
                },
                "channels[1]",
            ),
            (
                BroadcastRequest {
                    channels: Some(vec![]),
                    ..request(&["+14155551234"])
                },
                "channels",
            ),
            (
                BroadcastRequest {
                    idempotency_key: Some("has space".into()),
                    ..request(&["+14155551234"])
                },
                "idempotency_key",
            ),
            (
                BroadcastRequest {
                    profile_id: Some("  ".into()),
                    ..request(&["+14155551234"])
                },
                "profile_id",
            ),
        ];
        for (req, field) in cases {
            let e = BroadcastPlan::parse(req, &config, "a").expect_err(field);
            assert_eq!(invalid_field(e), field);
        }
    }
}
