//! [`FunctionSpec::to_toml`]: a spec written back as `gust.toml` text, every default
//! spelled out, so that the manifest the API shows for a revision parses back to the same spec.

use super::{FunctionAuth, FunctionSpec, Network, Runtime};
use crate::quantity::{format_bytes, format_duration};

impl FunctionSpec {
    /// The spec as `gust.toml` text, with every default written out.
    pub fn to_toml(&self) -> String {
        let mut out = format!(
            "name = \"{}\"\nruntime = \"{}\"\nhandler = {}\n",
            self.name,
            self.runtime,
            toml_str(&self.handler)
        );
        if self.runtime == Runtime::Exec {
            out.push_str(&format!("protocol = \"{}\"\n", self.protocol.as_str()));
        }
        if self.auth == FunctionAuth::Token {
            out.push_str("auth = \"token\"\n");
        }
        if self.network == Network::None {
            out.push_str("network = \"none\"\n");
        }
        if !self.secrets.is_empty() {
            let names: Vec<String> = self.secrets.iter().map(|s| toml_str(s)).collect();
            out.push_str(&format!("secrets = [{}]\n", names.join(", ")));
        }
        if let Some(b) = &self.build {
            out.push_str(&format!("build = {}\n", toml_str(b)));
        }
        for (key, topic) in [("input", &self.input), ("output", &self.output)] {
            if let Some(t) = topic {
                out.push_str(&format!("{key} = {}\n", toml_str(t)));
            }
        }
        if !self.env.is_empty() {
            out.push_str("\n[env]\n");
            for (k, v) in &self.env {
                out.push_str(&format!("{k} = {}\n", toml_str(v)));
            }
        }
        if !self.secret_env.is_empty() {
            out.push_str("\n[secret_env]\n");
            for (k, v) in &self.secret_env {
                out.push_str(&format!("{k} = {}\n", toml_str(v)));
            }
        }
        out.push_str(&format!("\n[limits]\ntimeout = \"{}\"\n", format_duration(self.limits.timeout)));
        if let Some(m) = self.limits.memory {
            out.push_str(&format!("memory = \"{}\"\n", format_bytes(m)));
        }
        if let Some(c) = self.limits.cpu {
            out.push_str(&format!("cpu = \"{c}m\"\n"));
        }
        if let Some(p) = self.limits.processes {
            out.push_str(&format!("processes = {p}\n"));
        }
        out.push_str(&format!("max_body = \"{}\"\n", format_bytes(self.limits.max_body)));
        out.push_str(&format!("build_timeout = \"{}\"\n", format_duration(self.limits.build_timeout)));
        let s = &self.scale;
        out.push_str(&format!(
            "\n[scale]\nconcurrency = {}\ntarget = {}\ntarget_utilization = {}\nmin = {}\nmax = {}\ninitial = {}\n",
            s.concurrency,
            s.target(),
            s.target_utilization,
            s.min,
            s.max,
            s.initial
        ));
        out.push_str(&format!(
            "stable_window = \"{}\"\npanic_window_percentage = {}\npanic_threshold_percentage = {}\n",
            format_duration(s.stable_window),
            s.panic_window_percentage,
            s.panic_threshold_percentage
        ));
        out.push_str(&format!(
            "max_scale_up_rate = {}\nmax_scale_down_rate = {}\nscale_down_delay = \"{}\"\nscale_to_zero_grace = \"{}\"\n",
            s.max_scale_up_rate,
            s.max_scale_down_rate,
            format_duration(s.scale_down_delay),
            format_duration(s.scale_to_zero_grace)
        ));
        out.push_str(&format!(
            "queue_depth = {}\nqueue_timeout = \"{}\"\n",
            s.queue_depth,
            format_duration(s.queue_timeout)
        ));
        out.push_str(&self.delivery.to_toml());
        for r in &self.routes {
            out.push_str(&format!("\n[[routes]]\nmethod = \"{}\"\npath = {}\n", r.method, toml_str(r.path.as_str())));
        }
        for t in &self.triggers {
            out.push_str("\n[[triggers]]\n");
            if let Some(expr) = &t.schedule {
                out.push_str(&format!("schedule = {}\n", toml_str(expr)));
            }
            if let Some(tz) = &t.timezone {
                out.push_str(&format!("timezone = {}\n", toml_str(tz)));
            }
            for (key, conditions) in
                [("exact", &t.filter.exact), ("prefix", &t.filter.prefix), ("suffix", &t.filter.suffix)]
            {
                if !conditions.is_empty() {
                    let parts: Vec<String> = conditions.iter().map(|(k, v)| format!("{k} = {}", toml_str(v))).collect();
                    out.push_str(&format!("{key} = {{ {} }}\n", parts.join(", ")));
                }
            }
        }
        out
    }
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}
