//! Percentiles and the one JSON line every scenario prints.

use crate::Args;

pub(crate) fn percentile_ms(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index] as f64 / 1e6
}

pub(crate) fn json_f(value: f64) -> String {
    if value.is_finite() {
        format!("{value:.3}")
    } else {
        "null".to_owned()
    }
}

pub(crate) fn json_opt(value: Option<u64>) -> String {
    value.map_or("null".to_owned(), |v| v.to_string())
}

pub(crate) fn prefix(args: &Args) -> String {
    args.id_prefix
        .clone()
        .unwrap_or_else(|| format!("lg{:06x}", fastrand::u32(..0xffffff)))
}

// ---------------------------------------------------------------- scenarios
