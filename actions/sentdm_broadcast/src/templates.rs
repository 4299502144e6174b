//! The templates sends name, read from SentDM and kept for a minute, so a send's
//! parameters are checked against the template's variables before anything is sent.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sentdm_client::client::{self, Client};
use sentdm_client::model::{PageRequest, Template, TemplateQuery, TemplateRef};

/// How long a template read from SentDM is trusted: long enough that a burst of sends
/// costs one read, short enough that an edited template is seen within a minute.
pub const TEMPLATE_TTL: Duration = Duration::from_secs(60);
/// Templates kept at most; past it, the cache starts over (a deployment uses a handful).
const MAX_TEMPLATES: usize = 256;

/// What a lookup found.
#[derive(Debug, Clone)]
pub enum Lookup {
    /// SentDM has it (boxed: a template is hundreds of bytes, `Unknown` none).
    Found(Box<Template>),
    /// SentDM knows no such template; the send goes on and SentDM's own answer (404)
    /// reaches the caller, as before.
    Unknown,
}

/// Templates by (profile, id or name), each with the time it was read.
#[derive(Default)]
pub struct TemplateCache {
    entries: Mutex<HashMap<String, (Instant, Template)>>,
}

impl TemplateCache {
    /// The template `template` names, as `client` (the send's profile) sees it: from the
    /// cache when read less than [`TEMPLATE_TTL`] ago, else from SentDM (by id, or by
    /// exact name among the search results).
    pub async fn lookup(
        &self,
        client: &Client,
        profile: Option<&str>,
        template: &TemplateRef,
    ) -> Result<Lookup, client::Error> {
        let key = match (&template.id, &template.name) {
            (Some(id), _) => format!("{}|id|{id}", profile.unwrap_or("")),
            (None, Some(name)) => format!("{}|name|{name}", profile.unwrap_or("")),
            (None, None) => return Ok(Lookup::Unknown),
        };
        if let Some(t) = self.fresh(&key) {
            return Ok(Lookup::Found(Box::new(t)));
        }
        let found = match (&template.id, &template.name) {
            (Some(id), _) => match client.get_template(id).await {
                Ok(t) => Some(t),
                // 400: not an id SentDM accepts; 404: no such template.
                Err(client::Error::Api(e)) if matches!(e.status, 400 | 404) => None,
                Err(e) => return Err(e),
            },
            (None, Some(name)) => {
                let q = TemplateQuery {
                    page: PageRequest {
                        page: 1,
                        page_size: 100,
                    },
                    search: Some(name.clone()),
                    status: None,
                    category: None,
                };
                client
                    .list_templates(&q)
                    .await?
                    .items
                    .into_iter()
                    .find(|t| t.name == *name)
            }
            (None, None) => None,
        };
        let Some(t) = found else {
            return Ok(Lookup::Unknown);
        };
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= MAX_TEMPLATES {
            entries.clear();
        }
        entries.insert(key, (Instant::now(), t.clone()));
        Ok(Lookup::Found(Box::new(t)))
    }

    fn fresh(&self, key: &str) -> Option<Template> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(key)
            .filter(|(at, _)| at.elapsed() < TEMPLATE_TTL)
            .map(|(_, t)| t.clone())
    }
}
