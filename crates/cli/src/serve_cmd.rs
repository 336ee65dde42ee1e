//! `metaids serve`: merges the config file and the flags, then hands over to `metaids-serve`.

use anyhow::{Context, Result};
use metaids_serve::ServeConfig;

use crate::args::ServeArgs;

/// The settings: the config file's, each flag given overriding its key.
fn settings(a: ServeArgs) -> Result<ServeConfig> {
    let mut c = match &a.config {
        Some(p) => ServeConfig::load(p)?,
        None => ServeConfig::default(),
    };
    macro_rules! flag {
        ($field:ident) => {
            if a.$field.is_some() {
                c.$field = a.$field;
            }
        };
        ($field:ident, $key:ident) => {
            if let Some(v) = a.$field {
                c.$key = v;
            }
        };
    }
    flag!(model);
    flag!(library);
    flag!(pcap_dir);
    flag!(flow_dir);
    flag!(interface);
    flag!(bpf);
    flag!(eve);
    flag!(state);
    flag!(tokens);
    flag!(tls_cert);
    flag!(tls_key);
    flag!(sensor);
    flag!(listen, listen);
    flag!(stats_interval, stats_interval_s);
    flag!(poll_ms, poll_ms);
    flag!(settle_ms, settle_ms);
    flag!(batch, batch);
    flag!(max_runtime, max_runtime_s);
    flag!(webhook);
    if !a.forward.is_empty() {
        c.forward = a.forward;
    }
    Ok(c)
}

/// Runs the command.
pub fn run(a: ServeArgs) -> Result<()> {
    let c = settings(a)?;
    let summary = metaids_serve::run(c).context("serve")?;
    eprint!("{summary}");
    Ok(())
}
