//! IPAM cost per operation, through the public API the controller uses
//! (`reconcile` to allocate, `release_service` to release), in steady state:
//! the pool is half full (for the /64: 32,768 addresses in use), one Service
//! is allocated and the oldest one released, over and over.
//!
//! Before the criterion groups, `cargo bench` runs exactly 1,000,000
//! allocate+release pairs per pool and prints ns per pair.
//!
//! Run: `cargo bench -p purelb-allocator --bench ipam`
//! (shorter: append `-- --sample-size 10 --measurement-time 2`).

use std::collections::VecDeque;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group};
use purelb_allocator::ipam::{GroupInput, Ipam, ServiceRequest, Step};
use purelb_api::pool::IpFamily;

struct Pool {
    label: &'static str,
    pool: &'static str,
    subnet: &'static str,
    family: IpFamily,
    /// Addresses in use in steady state.
    prefill: usize,
}

const POOLS: [Pool; 3] = [
    Pool {
        label: "256",
        pool: "10.0.0.0/24",
        subnet: "10.0.0.0/24",
        family: IpFamily::V4,
        prefill: 128,
    },
    Pool {
        label: "slash16",
        pool: "10.1.0.0/16",
        subnet: "10.1.0.0/16",
        family: IpFamily::V4,
        prefill: 32_768,
    },
    Pool {
        label: "slash64",
        pool: "fd00:1:2:3::/64",
        subnet: "fd00:1:2:3::/64",
        family: IpFamily::V6,
        prefill: 32_768,
    },
];

/// A pool in steady state plus the FIFO of Services holding addresses.
struct Steady {
    ipam: Ipam,
    family: IpFamily,
    held: VecDeque<String>,
    next: u64,
}

impl Steady {
    fn new(p: &Pool) -> Self {
        let key = match p.family {
            IpFamily::V4 => "v4pool",
            IpFamily::V6 => "v6pool",
        };
        let spec = serde_json::json!({"remote": {key: {"pool": p.pool, "subnet": p.subnet}}});
        let group = GroupInput {
            namespace: "purelb-system".into(),
            name: "default".into(),
            spec: serde_json::from_value(spec).expect("spec"),
        };
        let ipam = Ipam::from_groups(Some("purelb-system"), &[group])
            .0
            .expect("pool parses");
        let mut s = Self {
            ipam,
            family: p.family,
            held: VecDeque::with_capacity(p.prefill + 1),
            next: 0,
        };
        for _ in 0..p.prefill {
            s.allocate();
        }
        s
    }

    fn allocate(&mut self) {
        let name = format!("s{}", self.next);
        self.next += 1;
        let req = ServiceRequest {
            families: vec![self.family],
            ..ServiceRequest::new("bench", &name)
        };
        match self.ipam.reconcile(&req, None) {
            Step::Done(out) => {
                assert!(out.is_ok(), "{:?}", out.error);
                black_box(out);
            }
            _ => unreachable!("local pools finish in one step"),
        }
        self.held.push_back(req.key);
    }

    fn release(&mut self) {
        let key = self.held.pop_front().expect("something held");
        black_box(self.ipam.release_service(&key, Some("default")));
    }
}

fn million() {
    const N: u32 = 1_000_000;
    for p in &POOLS {
        let mut s = Steady::new(p);
        let start = Instant::now();
        for _ in 0..N {
            s.allocate();
            s.release();
        }
        let ns = start.elapsed().as_nanos() as f64 / f64::from(N);
        println!(
            "ipam/{}: {N} allocate+release pairs, {ns:.0} ns per pair ({} in use)",
            p.label,
            s.held.len()
        );
    }
}

/// Operations per timed batch when timing one kind of operation alone
/// (fewer than the free addresses of the smallest pool).
const BATCH: u64 = 64;

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("ipam");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for p in &POOLS {
        let mut s = Steady::new(p);
        group.bench_function(format!("allocate+release/{}", p.label), |b| {
            b.iter(|| {
                s.allocate();
                s.release();
            })
        });
        group.bench_function(format!("allocate/{}", p.label), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let n = left.min(BATCH);
                    let start = Instant::now();
                    for _ in 0..n {
                        s.allocate();
                    }
                    total += start.elapsed();
                    for _ in 0..n {
                        s.release();
                    }
                    left -= n;
                }
                total
            })
        });
        group.bench_function(format!("release/{}", p.label), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let n = left.min(BATCH);
                    for _ in 0..n {
                        s.allocate();
                    }
                    let start = Instant::now();
                    for _ in 0..n {
                        s.release();
                    }
                    total += start.elapsed();
                    left -= n;
                }
                total
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` does not, and
    // then each benchmark only runs once as a smoke test.
    if std::env::args().any(|a| a == "--bench") {
        million();
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
