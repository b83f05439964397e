//! Tests of the registry: runs take pending files once, advance in order,
//! and commit nothing without the lease.

use super::*;

fn file(hash: &str, valid: i64) -> FileRecord {
    FileRecord {
        hash: hash.into(),
        path: format!("{hash}.parquet"),
        stored: format!("/store/{hash}.parquet"),
        bytes: 10,
        rows: valid,
        valid,
        rejected: 0,
        error: None,
        first_seen: now_text(),
        run_id: None,
    }
}

#[test]
fn runs_take_every_pending_file_once_and_advance_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut reg = Registry::open(&dir.path().join("r.sqlite")).unwrap();
    let me = crate::lease::new_holder();
    crate::lease::acquire(
        reg.conn_mut(),
        RETRAIN_LEASE,
        &me,
        60,
        crate::lease::unix_now(),
    )
    .unwrap();
    assert!(
        reg.create_run(&me, |i| PathBuf::from(format!("r{i}")))
            .unwrap()
            .is_none()
    );
    assert!(reg.insert_file(&file("a", 5)).unwrap());
    assert!(
        !reg.insert_file(&file("a", 5)).unwrap(),
        "a hash is registered once"
    );
    reg.insert_file(&file("empty", 0)).unwrap();
    let run = reg
        .create_run(&me, |i| PathBuf::from(format!("r{i}")))
        .unwrap()
        .unwrap();
    assert_eq!(
        (run.id, run.status, run.dir.as_str()),
        (1, RunStatus::Registered, "r1")
    );
    assert_eq!(reg.files_of_run(1).unwrap().len(), 1);
    assert!(
        reg.pending_files().unwrap().is_empty(),
        "the empty file is never pending"
    );
    reg.insert_file(&file("b", 3)).unwrap();
    // Skipping a stage or going from the wrong status is refused and
    // changes nothing.
    for (from, to) in [
        (RunStatus::Registered, RunStatus::Pretrained),
        (RunStatus::Produced, RunStatus::Pretrained),
    ] {
        let err = reg.advance(1, from, to, &me, |_| Ok(())).unwrap_err();
        assert!(matches!(err, SchedulerError::Transition { .. }), "{err}");
    }
    reg.set_error(1, "boom").unwrap();
    reg.advance(1, RunStatus::Registered, RunStatus::Produced, &me, |tx| {
        tx.execute("UPDATE runs SET new_rows = 5 WHERE id = 1", [])?;
        Ok(())
    })
    .unwrap();
    let r = reg.run(1).unwrap().unwrap();
    assert_eq!(
        (r.status, r.new_rows, r.error),
        (RunStatus::Produced, Some(5), None)
    );
    assert!(r.produced_at.is_some() && r.pretrained_at.is_none());
    // A stage whose own writes fail commits nothing.
    let err = reg
        .advance(1, RunStatus::Produced, RunStatus::Pretrained, &me, |tx| {
            tx.execute("UPDATE runs SET pretrain_steps = 9 WHERE id = 1", [])?;
            Err(SchedulerError::Corrupt("stage failed".into()))
        })
        .unwrap_err();
    assert!(matches!(err, SchedulerError::Corrupt(_)));
    let r = reg.run(1).unwrap().unwrap();
    assert_eq!((r.status, r.pretrain_steps), (RunStatus::Produced, None));
    // Only one run is open; without the lease nothing advances.
    assert_eq!(reg.open_run().unwrap().unwrap().id, 1);
    let other = "elsewhere:1:x";
    let err = reg
        .advance(1, RunStatus::Produced, RunStatus::Pretrained, other, |_| {
            Ok(())
        })
        .unwrap_err();
    assert!(matches!(err, SchedulerError::LeaseLost { .. }), "{err}");
    assert!(
        reg.create_run(other, |i| PathBuf::from(format!("r{i}")))
            .is_err()
    );
    // The next run gets b only.
    let mut status = RunStatus::Produced;
    for to in [
        RunStatus::Pretrained,
        RunStatus::Finetuned,
        RunStatus::Evaluated,
        RunStatus::Rejected,
    ] {
        reg.advance(1, status, to, &me, |_| Ok(())).unwrap();
        status = to;
    }
    assert!(reg.open_run().unwrap().is_none());
    let run2 = reg
        .create_run(&me, |i| PathBuf::from(format!("r{i}")))
        .unwrap()
        .unwrap();
    let hashes: Vec<String> = reg
        .files_of_run(run2.id)
        .unwrap()
        .into_iter()
        .map(|f| f.hash)
        .collect();
    assert_eq!(hashes, ["b"]);
    assert_eq!(reg.files_before(run2.id).unwrap()[0].hash, "a");
}
