//! Two ranks over Gloo on 127.0.0.1: as threads of this process, and as two
//! processes (this test binary runs itself as rank 1). Failures of a peer
//! (gone, hung) end the survivor's collective within the timeout, naming the
//! lost rank.

use std::process::Command;
use std::time::{Duration, Instant};

use pretext_dist::{
    DistError, GradBuckets, GroupOptions, ProcessGroup, Rendezvous, Store, digest, free_port, init,
};
use tch::{Device, Kind, Tensor};

fn options(timeout: Duration) -> GroupOptions {
    GroupOptions {
        timeout,
        liveness_grace: Duration::from_millis(500),
        ..Default::default()
    }
}

/// Two groups of one world, rank 0 hosting the store on a free port.
fn pair(timeout: Duration) -> (ProcessGroup, ProcessGroup) {
    let store0 = Store::connect("127.0.0.1", 0, true, timeout).expect("host the store");
    let port = store0.port();
    let g1 = std::thread::spawn(move || {
        let store1 = Store::connect("127.0.0.1", port, false, timeout).expect("join the store");
        ProcessGroup::new(store1, 1, 2, options(timeout)).expect("rank 1 joins")
    });
    let g0 = ProcessGroup::new(store0, 0, 2, options(timeout)).expect("rank 0 joins");
    (g0, g1.join().unwrap())
}

/// Runs `f(group)` on both ranks at once; their results in rank order.
fn both<T: Send + 'static>(
    (g0, g1): (ProcessGroup, ProcessGroup),
    f: impl Fn(&ProcessGroup) -> T + Send + Sync + Clone + 'static,
) -> (T, T) {
    let f1 = f.clone();
    let h = std::thread::spawn(move || f1(&g1));
    let a = f(&g0);
    (a, h.join().unwrap())
}

/// Parameters of a toy model, different on each rank until broadcast
/// (no global RNG: tests run in parallel threads).
fn params(rank: usize) -> Vec<Tensor> {
    let make = |shape: &[i64], salt: f64| {
        let n: i64 = shape.iter().product();
        (Tensor::arange(n, (Kind::Float, Device::Cpu)) * 0.37 + 10.0 * rank as f64 + salt)
            .sin()
            .view(shape)
    };
    vec![make(&[3, 4], 0.0), make(&[7], 1.0), make(&[2, 2, 2], 2.0)]
}

#[test]
fn broadcast_bucketed_all_reduce_and_agreement_between_two_ranks() {
    let (d0, d1) = both(pair(Duration::from_secs(20)), |g| {
        let mut p = params(g.rank());
        g.broadcast(&mut p, 0).unwrap();
        let after_broadcast = digest(&p).unwrap();
        // Gradients: rank r holds (r + 1) · p; the sum is 3 · p.
        let grads: Vec<Tensor> = p.iter().map(|t| t * (g.rank() as f64 + 1.0)).collect();
        // 48-byte buckets: several collectives.
        let plan = GradBuckets::new(&p, 48);
        assert!(plan.len() > 1);
        let sum = plan.all_reduce(g, &grads).unwrap();
        for (s, t) in sum.iter().zip(&p) {
            assert_eq!(s.size(), t.size());
            let diff = (s - t * 3.0).abs().max().double_value(&[]);
            assert!(diff < 1e-6, "bucketed sum off by {diff}");
        }
        let mut counts = [g.rank() as i64 + 1, 10];
        g.all_reduce_i64(&mut counts).unwrap();
        assert_eq!(counts, [3, 20]);
        let mut losses = [0.25 * (g.rank() as f64 + 1.0)];
        g.all_reduce_f64(&mut losses).unwrap();
        assert_eq!(losses, [0.75]);
        g.check_equal("a shared number", 42).unwrap();
        let err = g.check_equal("the rank", g.rank() as i64).unwrap_err();
        assert!(matches!(err, DistError::Mismatch(_)), "{err}");
        g.barrier().unwrap();
        after_broadcast
    });
    assert_eq!(d0, d1, "identical parameters after the broadcast");
    assert_eq!(d0, digest(&params(0)).unwrap(), "rank 0's parameters");
}

#[test]
fn non_contiguous_tensors_are_rejected_before_anything_is_sent() {
    let (r0, r1) = both(pair(Duration::from_secs(20)), |g| {
        let t = Tensor::arange(6, (Kind::Float, Device::Cpu)).view([2, 3]);
        let err = g.all_reduce_sum(&mut [t.transpose(0, 1)]).unwrap_err();
        assert!(matches!(err, DistError::InvalidTensor { .. }), "{err}");
        let err = g.broadcast(&mut [t.transpose(0, 1)], 0).unwrap_err();
        assert!(matches!(err, DistError::InvalidTensor { .. }), "{err}");
        // Nothing was sent: the group still works.
        let mut ok = [t.transpose(0, 1).contiguous()];
        g.all_reduce_sum(&mut ok).unwrap();
        Vec::<f32>::try_from(ok[0].view([-1])).unwrap()
    });
    assert_eq!(r0, vec![0.0, 6.0, 2.0, 8.0, 4.0, 10.0]);
    assert_eq!(r0, r1);
}

#[test]
fn a_peer_that_leaves_fails_the_survivor_fast_naming_it() {
    let (g0, g1) = pair(Duration::from_secs(20));
    drop(g1);
    let start = Instant::now();
    let err = g0.all_reduce_i64(&mut [1]).unwrap_err();
    let took = start.elapsed();
    match &err {
        DistError::Collective { rank, lost, .. } => {
            assert_eq!(*rank, 0);
            assert_eq!(lost, &[1], "{err}");
        }
        other => panic!("expected a collective error, got {other}"),
    }
    assert!(err.to_string().contains("lost rank 1"), "{err}");
    assert!(
        took < Duration::from_secs(10),
        "a closed peer is noticed at once, not after the timeout: {took:?}"
    );
}

#[test]
fn a_hung_peer_fails_the_survivor_after_the_timeout() {
    let timeout = Duration::from_secs(3);
    let (g0, g1) = pair(timeout);
    let start = Instant::now();
    let err = g0.all_reduce_i64(&mut [1]).unwrap_err();
    let took = start.elapsed();
    assert!(matches!(err, DistError::Collective { .. }), "{err}");
    assert!(err.to_string().contains("lost rank 1"), "{err}");
    assert!(
        took >= timeout - Duration::from_millis(700)
            && took <= timeout + Duration::from_millis(700),
        "failed after {took:?}: a hung peer is named within the timeout ({timeout:?}): {err}"
    );
    drop(g1);
}

#[test]
fn identical_replicas_take_ranks_from_the_store() {
    let port = free_port().unwrap();
    let rdv = Rendezvous {
        master_addr: "127.0.0.1".into(),
        master_port: port,
        world_size: 2,
        rank: None,
    };
    let r2 = rdv.clone();
    let h = std::thread::spawn(move || {
        let g = init(&r2, options(Duration::from_secs(20))).unwrap();
        let mut v = [g.rank() as i64];
        g.all_reduce_i64(&mut v).unwrap();
        (g.rank(), v[0], g)
    });
    let g = init(&rdv, options(Duration::from_secs(20))).unwrap();
    let mut v = [g.rank() as i64];
    g.all_reduce_i64(&mut v).unwrap();
    let (other, v1, g1) = h.join().unwrap();
    let mut ranks = [g.rank(), other];
    ranks.sort();
    assert_eq!(ranks, [0, 1]);
    assert_eq!((v[0], v1), (1, 1));
    let h = std::thread::spawn(move || g1.destroy());
    g.destroy().unwrap();
    h.join().unwrap().unwrap();
}

/// NCCL in every build: without the `nccl` feature a clear Unsupported
/// error; with it (the workspace build: `pretext` turns it on) the real
/// ProcessGroupNCCL, which without a GPU refuses with c10d's own error (no
/// crash), and with one sums on the GPU.
#[test]
fn nccl_group_of_one() {
    let store = Store::connect("127.0.0.1", 0, true, Duration::from_secs(5)).unwrap();
    let result = ProcessGroup::new(
        store,
        0,
        1,
        GroupOptions {
            backend: pretext_dist::Backend::Nccl,
            ..options(Duration::from_secs(20))
        },
    );
    if !pretext_dist::nccl_built() {
        let err = result.unwrap_err();
        assert!(matches!(err, DistError::Unsupported(_)), "{err}");
        return;
    }
    if !tch::Cuda::is_available() {
        let err = result.unwrap_err();
        assert!(
            matches!(&err, DistError::Init { message, .. } if message.contains("GPU")),
            "{err}"
        );
        return;
    }
    let g = result.expect("an NCCL group of one on a GPU");
    assert_eq!(g.device(), Device::Cuda(0));
    let mut t = [Tensor::full([1000], 2.0, (Kind::Float, Device::Cuda(0)))];
    g.all_reduce_sum(&mut t).unwrap();
    assert_eq!(t[0].sum(Kind::Float).double_value(&[]), 2000.0);
    let mut n = [3i64, 4];
    g.all_reduce_i64(&mut n).unwrap();
    assert_eq!(n, [3, 4]);
    g.destroy().unwrap();
}

/// The second process of [`two_processes_sum_and_broadcast`]: only runs
/// when that test starts it.
#[test]
#[ignore = "rank 1 of two_processes_sum_and_broadcast; started by it"]
fn child_rank() {
    if std::env::var_os("PRETEXT_DIST_CHILD").is_none() {
        return;
    }
    let rdv = Rendezvous::from_env().unwrap().expect("WORLD_SIZE set");
    let g = init(&rdv, options(Duration::from_secs(30))).unwrap();
    run_rank(&g);
    g.destroy().unwrap();
}

/// What each process does: 1M floats summed, a broadcast, a digest check.
fn run_rank(g: &ProcessGroup) -> String {
    let mut big = [Tensor::full(
        [1 << 20],
        g.rank() as f64 + 1.0,
        (Kind::Float, Device::Cpu),
    )];
    g.all_reduce_sum(&mut big).unwrap();
    let (lo, hi) = (
        big[0].min().double_value(&[]),
        big[0].max().double_value(&[]),
    );
    assert_eq!((lo, hi), (3.0, 3.0));
    let mut p = params(g.rank());
    g.broadcast(&mut p, 0).unwrap();
    let d = digest(&p).unwrap();
    // Every rank's digest agrees with rank 0's.
    let mut dig = [Tensor::from_slice(&[
        i64::from_str_radix(&d[..15], 16).unwrap()
    ])];
    let mine = dig[0].int64_value(&[0]);
    g.broadcast(&mut dig, 0).unwrap();
    assert_eq!(dig[0].int64_value(&[0]), mine);
    d
}

#[test]
fn two_processes_sum_and_broadcast() {
    let port = free_port().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_rank", "--include-ignored", "--nocapture"])
        .env("PRETEXT_DIST_CHILD", "1")
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", port.to_string())
        .env("WORLD_SIZE", "2")
        .env("RANK", "1")
        .spawn()
        .unwrap();
    let rdv = Rendezvous {
        master_addr: "127.0.0.1".into(),
        master_port: port,
        world_size: 2,
        rank: Some(0),
    };
    let g = init(&rdv, options(Duration::from_secs(30))).unwrap();
    let start = Instant::now();
    let d = run_rank(&g);
    eprintln!(
        "two processes: sum of 1M floats + broadcast in {:?}",
        start.elapsed()
    );
    assert_eq!(d, digest(&params(0)).unwrap());
    g.destroy().unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "rank 1 failed: {status}");
}
