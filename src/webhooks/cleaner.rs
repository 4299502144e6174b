//! The payload cleaner: removes event payloads once their retention period has passed,
//! keeping the delivery and attempt metadata.

use tokio_util::sync::CancellationToken;

use super::WebhookSettings;
use super::retry::duration_ms;
use super::store::DeliveryStore;
use crate::time::now_ms;

/// Every `cleaner_interval`, expire the payloads older than `payload_retention`.
pub(crate) async fn run(
    store: DeliveryStore,
    settings: WebhookSettings,
    cancel: CancellationToken,
) {
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(settings.cleaner_interval) => {}
        }
        let cutoff = now_ms() - duration_ms(settings.payload_retention);
        match store.expire_payloads(cutoff).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(expired = n, "expired webhook payloads"),
            Err(e) => tracing::warn!(error = %e, "webhook payload cleaner failed"),
        }
    }
}
