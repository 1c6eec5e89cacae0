//! Telling the proxy to shut down once the app is done: one `POST /shutdown`, sent again only
//! while the connection itself fails, so the proxy never sees the request twice.

use std::time::Duration;

use lameduck_api::admin::ShutdownAnswer;
use tracing::{debug, info, warn};

use crate::admin_client::AdminClient;

/// Attempts while the admin port refuses connections (a proxy that is restarting, say).
const ATTEMPTS: u32 = 5;
/// Pause after the first refused attempt; it doubles after each (50+100+200+400 ms in all).
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(50);

/// Posts `/shutdown` and logs what came of it. Never fails: the app's exit code is what matters.
pub async fn shut_down_proxy(client: &AdminClient) -> Option<ShutdownAnswer> {
    let mut delay = FIRST_RETRY_DELAY;
    for attempt in 1..=ATTEMPTS {
        match client.shutdown().await {
            Ok(status) => {
                let answer = ShutdownAnswer::from_status(status.as_u16());
                if answer.is_accepted() {
                    info!("POST /shutdown to {} answered {status}: {}", client.uri(), answer.describe());
                } else {
                    warn!("POST /shutdown to {} answered {status}: {}", client.uri(), answer.describe());
                }
                return Some(answer);
            }
            Err(error) if error.is_before_request() && attempt < ATTEMPTS => {
                debug!(attempt, "cannot reach the proxy to shut it down: {error}; retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            Err(error) => {
                warn!("could not shut the proxy down after {attempt} attempt(s): {error}");
                return None;
            }
        }
    }
    None
}
