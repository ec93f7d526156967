//! The native baseline of `tests/bench/otel_bench.py`: the same OTLP bodies decoded with the
//! same prost types into nothing, and through the plugin's whole logic (decode + rows), with
//! no wasm, HTTP or engine. Run with
//! `OTEL_BENCH_BODIES=FILE cargo test -p otel --release -- --ignored --nocapture native_decode`
//! (FILE: bodies framed as a little-endian u32 length, then the bytes).

use std::time::Instant;

use moonlink_sdk::receiver::HttpRequest;
use moonlink_sdk::Config;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

use crate::Otel;

fn bodies(path: &str) -> Vec<Vec<u8>> {
    let data = std::fs::read(path).expect("OTEL_BENCH_BODIES must name the bodies file");
    let mut out = Vec::new();
    let mut at = 0;
    while at + 4 <= data.len() {
        let len = u32::from_le_bytes(data[at..at + 4].try_into().unwrap()) as usize;
        out.push(data[at + 4..at + 4 + len].to_vec());
        at += 4 + len;
    }
    out
}

#[test]
#[ignore = "benchmark: needs OTEL_BENCH_BODIES"]
fn native_decode() {
    let Ok(path) = std::env::var("OTEL_BENCH_BODIES") else {
        return;
    };
    let bodies = bodies(&path);
    let best = |f: &dyn Fn() -> usize| {
        (0..3)
            .map(|_| {
                let started = Instant::now();
                let spans = f();
                spans as f64 / started.elapsed().as_secs_f64()
            })
            .fold(0.0, f64::max)
    };
    let decode = best(&|| {
        bodies
            .iter()
            .map(|b| {
                let request = ExportTraceServiceRequest::decode(&b[..]).unwrap();
                let spans = request.resource_spans.iter();
                spans
                    .flat_map(|r| &r.scope_spans)
                    .map(|s| s.spans.len())
                    .sum::<usize>()
            })
            .sum()
    });
    let otel = Otel::from_config(&Config::default()).unwrap();
    let plugin = best(&|| {
        bodies
            .iter()
            .map(|b| {
                let request = HttpRequest::post("/v1/traces", "application/x-protobuf", b.clone());
                let reception = otel.handle(request);
                reception
                    .batches
                    .iter()
                    .map(|b| b.operations.len())
                    .sum::<usize>()
            })
            .sum()
    });
    println!("BENCH native_decode_spans_per_s={decode:.0} native_plugin_spans_per_s={plugin:.0}");
}
