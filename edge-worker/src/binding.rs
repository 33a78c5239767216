//! [`IpLimiter`] over Cloudflare's Rate Limiting binding: `limit({key})`
//! resolves to `{success}`. Called by duck typing (`Reflect`), so the same
//! code runs on Cloudflare, under `wrangler dev` (miniflare's binding) and
//! under plain workerd (the stand-in module `scripts/workerd.sh` wires in).

use synckairos_api::IpLimiter;
use worker::js_sys::{self, Function, Object, Promise, Reflect};
use worker::wasm_bindgen::{JsCast, JsValue};
use worker::wasm_bindgen_futures::JsFuture;

/// The binding's name in `wrangler.toml` (`[[ratelimits]] name = …`).
pub const IP_RATE_LIMITER: &str = "IP_RATE_LIMITER";

/// A rate-limit binding of `env`.
pub struct RateLimitBinding {
    binding: JsValue,
    limit: Function,
}

impl RateLimitBinding {
    /// The binding `name` of `env`, or `None` when it is not bound.
    pub fn from_env(env: &JsValue, name: &str) -> Option<RateLimitBinding> {
        let binding = Reflect::get(env, &name.into()).ok()?;
        if !binding.is_object() {
            return None;
        }
        let limit = Reflect::get(&binding, &"limit".into())
            .ok()?
            .dyn_into::<Function>()
            .ok()?;
        Some(RateLimitBinding { binding, limit })
    }
}

fn describe(e: JsValue) -> String {
    e.dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .unwrap_or_else(|| format!("{e:?}"))
}

impl IpLimiter for RateLimitBinding {
    async fn allow(&self, key: &str) -> Result<bool, String> {
        let options = Object::new();
        Reflect::set(&options, &"key".into(), &key.into()).map_err(describe)?;
        let promise: Promise = self
            .limit
            .call1(&self.binding, &options)
            .map_err(describe)?
            .dyn_into()
            .map_err(|_| "limit() did not return a promise".to_string())?;
        let outcome = JsFuture::from(promise).await.map_err(describe)?;
        Reflect::get(&outcome, &"success".into())
            .map_err(describe)?
            .as_bool()
            .ok_or_else(|| "limit() resolved without a boolean `success`".to_string())
    }
}
