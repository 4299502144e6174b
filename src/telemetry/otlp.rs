//! Optional OpenTelemetry traces over OTLP/HTTP (`GRAPHAGENT_OTLP_ENDPOINT`, off by
//! default). The process's subscriber carries an empty slot ([`slot`]) from the start,
//! because logging is set up before the settings are read; a host whose settings name
//! an endpoint fills it with a `tracing-opentelemetry` layer ([`start`]) and empties it
//! again and flushes when it stops ([`OtlpTraces::shutdown`]). Span names and attributes:
//! `docs/metrics.md`, "Tracing"; why this shape: `docs/decisions.md`.

use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::{Layer, Registry, reload};

/// What the slot holds: nothing, or the OpenTelemetry layer.
type Slot = Option<Box<dyn Layer<Registry> + Send + Sync>>;

/// The slot of the subscriber this process installed, once it is installed.
static INSTALLED: OnceLock<reload::Handle<Slot, Registry>> = OnceLock::new();

/// How long one export may take: a collector that hangs must not hold spans forever.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// An empty slot for the OTLP layer, to put directly on the [`Registry`] (it is typed
/// for it), and the handle to [`activate`](SlotHandle::activate) once the subscriber it
/// is part of has been installed as the global default.
pub fn slot() -> (reload::Layer<Slot, Registry>, SlotHandle) {
    let (layer, handle) = reload::Layer::new(None);
    (layer, SlotHandle(handle))
}

/// The handle of a [`slot`] not yet known to be installed.
pub struct SlotHandle(reload::Handle<Slot, Registry>);

impl SlotHandle {
    /// The subscriber holding this slot is the global default: hosts may fill it. The
    /// first installed slot wins (a process has one global subscriber).
    pub fn activate(self) {
        let _ = INSTALLED.set(self.0);
    }
}

/// Whether spans are being exported now (a host with an endpoint is running).
pub fn is_active() -> bool {
    INSTALLED
        .get()
        .and_then(|h| h.with_current(Option::is_some).ok())
        .unwrap_or(false)
}

/// A running OTLP exporter; [`shutdown`](Self::shutdown) flushes it.
pub struct OtlpTraces {
    provider: SdkTracerProvider,
}

/// Serialises filling and emptying the slot (two hosts in one process: the last started
/// exports, and stopping one does not empty the slot of the other).
static OWNER: Mutex<u64> = Mutex::new(0);

impl std::fmt::Debug for OtlpTraces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtlpTraces").finish_non_exhaustive()
    }
}

/// The traces URL for the collector base `endpoint` (already checked): OTLP/HTTP's
/// `/v1/traces` appended, as `OTEL_EXPORTER_OTLP_ENDPOINT` is read by other SDKs.
pub fn traces_url(endpoint: &str) -> String {
    format!("{}/v1/traces", endpoint.trim_end_matches('/'))
}

/// Start exporting spans to `endpoint` (a checked base URL) as `service_name`. `None`
/// when this process's subscriber has no slot (an embedder installed its own): then
/// nothing is exported, and a warning says so.
pub fn start(endpoint: &str, service_name: &str) -> Result<Option<OtlpTraces>, String> {
    let Some(handle) = INSTALLED.get() else {
        tracing::warn!(
            "GRAPHAGENT_OTLP_ENDPOINT is set, but the process's tracing subscriber has no \
             OTLP slot (graphagent::telemetry::otlp::slot); no traces are exported"
        );
        return Ok(None);
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(traces_url(endpoint))
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|e| format!("cannot build the OTLP exporter: {e}"))?;
    // The batch processor exports from its own thread, so a slow collector never holds
    // a request; spans beyond its queue are dropped, not buffered without bound.
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            Resource::builder()
                .with_service_name(service_name.to_owned())
                .build(),
        )
        .build();
    let layer = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("graphagent"))
        // Thread names and ids say nothing about a request, and cost bytes per span.
        .with_threads(false);
    let mut owner = OWNER.lock().unwrap_or_else(|e| e.into_inner());
    handle
        .reload(Some(
            Box::new(layer) as Box<dyn Layer<Registry> + Send + Sync>
        ))
        .map_err(|e| format!("cannot install the OTLP layer: {e}"))?;
    *owner += 1;
    tracing::info!(endpoint = %traces_url(endpoint), "exporting traces over OTLP/HTTP");
    Ok(Some(OtlpTraces { provider }))
}

impl OtlpTraces {
    /// Stop sending spans to this exporter and flush what it holds (the batch thread's
    /// last export, bounded by its timeout).
    pub async fn shutdown(self) {
        {
            let mut owner = OWNER.lock().unwrap_or_else(|e| e.into_inner());
            *owner -= 1;
            if *owner == 0
                && let Some(handle) = INSTALLED.get()
            {
                let _ = handle.reload(None);
            }
        }
        // `shutdown` joins the batch thread: not on a runtime worker.
        let provider = self.provider;
        let result = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        if let Ok(Err(e)) = result {
            tracing::warn!(error = %e, "the OTLP exporter did not flush cleanly");
        }
    }
}
