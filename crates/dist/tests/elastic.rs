//! Elastic membership over a real `TCPStore` and Gloo on 127.0.0.1, members
//! as threads of this process: a run that grows 1 -> 2, shrinks when one
//! leaves, grows again, and shrinks when one goes silent (dropped within
//! the dead-member bound); a run with MIN 2 waits for its second member.

use std::time::{Duration, Instant};

use pretext_dist::elastic::DEAD_AFTER;
use pretext_dist::{Elastic, ElasticOptions, Generation, GroupOptions, free_port};

fn options(port: u16, min: usize, max: usize) -> ElasticOptions {
    ElasticOptions {
        host: "127.0.0.1".into(),
        port,
        min,
        max,
        group: GroupOptions {
            timeout: Duration::from_secs(10),
            liveness_grace: Duration::from_millis(200),
            ..GroupOptions::default()
        },
    }
}

fn next(member: &mut Elastic) -> Generation {
    member
        .next_generation(&|| false)
        .expect("a generation forms")
        .expect("not stopped")
}

fn names(g: &Generation) -> Vec<&str> {
    g.members.iter().map(|m| m.name.as_str()).collect()
}

/// Sums `[1]` over the generation's group: its world size.
fn count(g: &Generation) -> i64 {
    let mut one = [1i64];
    g.group.all_reduce_i64(&mut one).expect("all-reduce");
    one[0]
}

/// Waits until a member registers for the generation after `member`'s.
fn until_waiting(member: &Elastic) {
    let start = Instant::now();
    while member.waiting().unwrap() == 0 {
        assert!(start.elapsed() < Duration::from_secs(10), "no joiner seen");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn members_join_leave_and_die_and_each_change_is_a_generation() {
    let port = free_port().unwrap();
    let mut a = Elastic::join(options(port, 1, 3), "a").unwrap();
    assert!(a.hosts_store());
    let g1 = next(&mut a);
    assert_eq!(
        (g1.number, g1.group.world_size(), names(&g1)),
        (1, 1, vec!["a"])
    );
    assert_eq!(a.waiting().unwrap(), 0);

    // b joins: a sees it waiting at its next "round" and re-forms.
    let b = std::thread::spawn(move || {
        let mut b = Elastic::join(options(port, 1, 3), "b").unwrap();
        assert!(!b.hosts_store());
        let g2 = next(&mut b);
        assert_eq!((g2.group.rank(), count(&g2)), (1, 2));
        b.leave().unwrap();
    });
    until_waiting(&a);
    drop(g1);
    let g2 = next(&mut a);
    assert_eq!(
        (g2.number, g2.group.rank(), names(&g2)),
        (2, 0, vec!["a", "b"])
    );
    assert_eq!(
        g2.joined
            .iter()
            .map(|m| m.name.as_str())
            .collect::<Vec<_>>(),
        ["b"]
    );
    assert_eq!(count(&g2), 2);
    b.join().unwrap();
    drop(g2);

    // b said it left: the next generation does not wait for it.
    let started = Instant::now();
    let g3 = next(&mut a);
    assert_eq!((g3.number, names(&g3)), (3, vec!["a"]));
    assert_eq!(g3.left.len(), 1);
    assert!(g3.lost.is_empty());
    assert!(started.elapsed() < DEAD_AFTER, "{:?}", started.elapsed());

    // c joins, then goes silent without leaving (its heartbeat stops).
    let c = std::thread::spawn(move || {
        let mut c = Elastic::join(options(port, 1, 3), "c").unwrap();
        let g4 = next(&mut c);
        assert_eq!(count(&g4), 2);
    });
    until_waiting(&a);
    drop(g3);
    let g4 = next(&mut a);
    assert_eq!(names(&g4), vec!["a", "c"]);
    assert_eq!(count(&g4), 2);
    c.join().unwrap();
    drop(g4);
    let started = Instant::now();
    let g5 = next(&mut a);
    let took = started.elapsed();
    eprintln!("a silent member was dropped after {took:?}");
    assert_eq!((g5.number, names(&g5)), (5, vec!["a"]));
    assert_eq!(
        g5.lost.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
        ["c"]
    );
    assert!(took < DEAD_AFTER + Duration::from_secs(2), "{took:?}");
    assert_eq!(count(&g5), 1);
}

#[test]
fn fewer_than_min_members_wait_and_one_over_max_waits_for_a_place() {
    let port = free_port().unwrap();
    let mut a = Elastic::join(options(port, 2, 2), "a").unwrap();
    let b = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(500));
        let mut b = Elastic::join(options(port, 2, 2), "b").unwrap();
        let g = next(&mut b);
        assert_eq!(count(&g), 2);
        // A third member finds the world full and waits for the next one.
        let c = std::thread::spawn(move || {
            let mut c = Elastic::join(options(port, 2, 2), "c").unwrap();
            let g = next(&mut c);
            assert_eq!(count(&g), 2);
            g.number
        });
        std::thread::sleep(Duration::from_millis(300));
        b.leave().unwrap();
        drop(g);
        c
    });
    let started = Instant::now();
    let g = next(&mut a);
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "did not wait for MIN"
    );
    assert_eq!((g.number, names(&g)), (1, vec!["a", "b"]));
    assert_eq!(count(&g), 2);
    let c = b.join().unwrap();
    drop(g);
    // b left; a and the waiting c form generation 2.
    let g2 = next(&mut a);
    assert_eq!((g2.number, names(&g2)), (2, vec!["a", "c"]));
    assert_eq!(count(&g2), 2);
    assert_eq!(c.join().unwrap(), 2);
}
