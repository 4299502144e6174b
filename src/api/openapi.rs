//! The OpenAPI document: the host's part, and the completion every route gets so the
//! document matches what is served (path parameters, security, the host's own error
//! answers), plus the check that no two parts define one schema name differently.

use utoipa::openapi::path::{Operation, Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{ArrayItems, Schema};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{
    ContentBuilder, OpenApi as OpenApiDoc, Ref, RefOr, Required, ResponseBuilder,
    SecurityRequirement,
};
use utoipa::{Modify, OpenApi};

use crate::error::ErrorBody;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "graphagent",
        description = "Host for agent actions whose state lives in a graph. Admin endpoints take \
                       `Authorization: Bearer <token>` (from `POST /api/auth/login`) or an \
                       `x-api-key` with the `admin` scope.",
    ),
    modifiers(&SecuritySchemes),
    components(schemas(ErrorBody)),
    tags(
        (name = "Health", description = "Liveness and readiness"),
        (name = "Auth", description = "Login and API keys"),
        (name = "Agents", description = "Loaded agents and actions"),
        (name = "Webhooks", description = "Outbound webhooks: event types, subscriptions, deliveries"),
    )
)]
pub(super) struct HostDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut OpenApiDoc) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("x-api-key"))),
        );
    }
}

/// One schema name defined with two different shapes by two parts of the document.
#[derive(Debug, thiserror::Error)]
#[error(
    "OpenAPI schema `{name}` is defined by {first} and, differently, by {second}; \
     give one of the types another name (`#[schema(as = UniqueName)]`)"
)]
pub struct SchemaConflict {
    /// The schema name.
    pub name: String,
    /// Who defined it first.
    pub first: String,
    /// Who defined it again, differently.
    pub second: String,
}

/// Which part of the document defined each schema name, and as what.
#[derive(Default)]
pub(super) struct SchemaOwners {
    seen: std::collections::BTreeMap<String, (String, serde_json::Value)>,
}

impl SchemaOwners {
    /// Record `part`'s schemas; the same name with the same shape (a shared type, such as
    /// `ErrorBody`) is fine, a different shape is a conflict.
    pub(super) fn claim(&mut self, owner: &str, part: &OpenApiDoc) -> Result<(), SchemaConflict> {
        let Some(components) = &part.components else {
            return Ok(());
        };
        for (name, schema) in &components.schemas {
            let shape = serde_json::to_value(schema).unwrap_or_default();
            match self.seen.get(name) {
                Some((first, known)) if *known != shape => {
                    return Err(SchemaConflict {
                        name: name.clone(),
                        first: first.clone(),
                        second: owner.to_owned(),
                    });
                }
                Some(_) => {}
                None => {
                    self.seen.insert(name.clone(), (owner.to_owned(), shape));
                }
            }
        }
        Ok(())
    }
}

/// Declare what the handlers leave implicit, so the document matches what is served:
/// the `{action_id}` parameter and admin security of action routes, and the answers the
/// host's extractors and layers give on every route that has what causes them.
pub(super) fn complete_doc(doc: &mut OpenApiDoc) {
    let admin = vec![
        SecurityRequirement::new("bearer", Vec::<String>::new()),
        SecurityRequirement::new("api_key", Vec::<String>::new()),
    ];
    for (path, item) in doc.paths.paths.iter_mut() {
        let names: Vec<String> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(str::to_owned)
            .collect();
        let is_action_route = path.starts_with("/api/actions/{action_id}/");
        for op in [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.patch,
            &mut item.delete,
        ]
        .into_iter()
        .flatten()
        {
            let params = op.parameters.get_or_insert_with(Vec::new);
            for name in &names {
                let declared = params
                    .iter()
                    .any(|p| p.name == *name && p.parameter_in == ParameterIn::Path);
                if !declared {
                    params.insert(0, path_param(name));
                }
            }
            if is_action_route && op.security.is_none() {
                op.security = Some(admin.clone());
            }
            add_error_responses(op, is_action_route);
        }
    }
}

/// The error answers an operation can get from the host itself, derived from what the
/// operation has. Answers the handler documents keep their description.
fn add_error_responses(op: &mut Operation, is_action_route: bool) {
    let has_params = op.parameters.as_ref().is_some_and(|p| !p.is_empty());
    let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());
    // A body declared with a named schema is read by the host's `Json` extractor; a
    // free-form one (`content = Object`, e.g. a signed provider webhook) by the handler.
    let json_body = op.request_body.as_ref().is_some_and(|b| {
        b.content
            .values()
            .any(|c| matches!(c.schema, Some(RefOr::Ref(_))))
    });
    let mut generic: Vec<(&str, &str)> = Vec::new();
    if has_params || json_body {
        generic.push((
            "400",
            "Malformed request: a path or query parameter, or the JSON body, cannot be \
             parsed (the message says which)",
        ));
    }
    if secured {
        generic.push(("401", "Credentials missing, invalid, expired or revoked"));
        generic.push((
            "403",
            "Valid credentials without the scope this route needs",
        ));
    }
    if is_action_route {
        generic.push(("404", "No loaded action of this type has this id"));
    }
    if json_body {
        generic.push(("413", "The body is larger than the server's limit"));
        generic.push(("415", "The body is not sent as `application/json`"));
        generic.push((
            "422",
            "The JSON body has a wrong type, or a missing or unknown field (named in the message)",
        ));
    }
    generic.push(("500", "Internal error; the detail is in the server log"));
    // Credentials checks and bodies lead to graph reads (API keys, users, state).
    if secured || json_body {
        generic.push(("503", "The graph store is unavailable; retry later"));
    }
    for (status, description) in generic {
        match op.responses.responses.get_mut(status) {
            Some(RefOr::T(existing)) if existing.description.is_empty() => {
                existing.description = description.to_owned();
                // Left bare by the handler: the host's own answer is the example.
                if let Some(media) = existing.content.get_mut("application/json")
                    && media.example.is_none()
                    && media.examples.is_empty()
                {
                    media.example = host_answer(status);
                }
            }
            Some(_) => {}
            None => {
                op.responses
                    .responses
                    .insert(status.to_owned(), error_response(status, description));
            }
        }
    }
}

fn error_response(status: &str, description: &str) -> RefOr<utoipa::openapi::Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .example(host_answer(status))
                    .build(),
            )
            .build(),
    )
}

/// The answer the host itself gives with `status`, as the example of that response:
/// built by the constructors the extractors, the credentials check and the graph use,
/// so each status shows its own code (not the schema's one example for all).
fn host_answer(status: &str) -> Option<serde_json::Value> {
    use axum::http::StatusCode;

    use crate::error::{ApiError, rejection};
    let error = match status {
        "400" => rejection(
            StatusCode::BAD_REQUEST,
            "Failed to deserialize query string: page: invalid digit found in string".into(),
        ),
        "401" => ApiError::unauthorized("missing credentials: send a bearer token or x-api-key"),
        "403" => ApiError::forbidden("this API key lacks the `admin` scope"),
        "404" => ApiError::not_found("no loaded `<type>` action `act_3f9c2a7d1e4b8c6f0a5d`"),
        "413" => rejection(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Failed to buffer the request body: length limit exceeded".into(),
        ),
        "415" => rejection(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Expected request with `Content-Type: application/json`".into(),
        ),
        "422" => rejection(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Failed to deserialize the JSON body into the target type: no_such_field: \
             unknown field `no_such_field`, expected one of …"
                .into(),
        ),
        "500" => ApiError::internal(),
        "503" => ApiError::unavailable("the graph store is unavailable; retry later"),
        _ => return None,
    };
    serde_json::to_value(error.body()).ok()
}

/// Restrict the items of array property `field` of component `schema` to `values` (the
/// server checks them against a list only known once the action types are registered).
pub(super) fn restrict_items(doc: &mut OpenApiDoc, schema: &str, field: &str, values: &[String]) {
    let property = doc
        .components
        .as_mut()
        .and_then(|c| c.schemas.get_mut(schema))
        .and_then(|s| match s {
            RefOr::T(Schema::Object(o)) => o.properties.get_mut(field),
            _ => None,
        });
    if let Some(RefOr::T(Schema::Array(array))) = property
        && let ArrayItems::RefOrSchema(items) = &mut array.items
        && let RefOr::T(Schema::Object(item)) = items.as_mut()
    {
        item.enum_values = Some(values.iter().map(|v| serde_json::json!(v)).collect());
    }
}

fn path_param(name: &str) -> Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Path)
        .required(Required::True)
        .description(Some(if name == "action_id" {
            "Action id (`act_…`)".to_owned()
        } else {
            name.replace('_', " ")
        }))
        .schema(Some(
            utoipa::openapi::ObjectBuilder::new()
                .schema_type(utoipa::openapi::schema::Type::String),
        ))
        .build()
}
