//! The per-service queue's rules: one swap at a time, the latest queued release wins, superseded
//! deploys answered, the backlog bounded, the queue file kept and read back.

use super::*;

fn release(id: &str) -> Release {
    Release {
        service: "web".into(),
        image: format!("web:{id}"),
        version: id.into(),
        deploy_id: id.into(),
        archive: None,
        code: None,
        no_ramp: false,
        requested_by: None,
    }
}

#[test]
fn latest_queued_release_wins_and_the_caller_is_told() {
    let h = ServiceHandle::new("web");
    let a = h.submit(release("a")).unwrap();
    assert_eq!(
        a,
        Submitted::Accepted {
            deploy_id: "a".into(),
            queued_behind: None,
            superseded: vec![]
        }
    );
    let b = h.submit(release("b")).unwrap();
    assert_eq!(
        b,
        Submitted::Accepted {
            deploy_id: "b".into(),
            queued_behind: None,
            superseded: vec!["a".into()]
        }
    );
    let v = h.view();
    assert_eq!(v.queued, vec![release("b")]);
    assert_eq!(
        v.deploy("a"),
        Some(DeployState::Superseded {
            release: Some(release("a")),
            by: "b".into()
        })
    );
    assert!(v.deploy("a").unwrap().is_finished());
    assert_eq!(
        h.submit(release("a")).unwrap(),
        Submitted::Existing {
            deploy_id: "a".into()
        }
    );
    assert_eq!(
        h.submit(release("b")).unwrap(),
        Submitted::Existing {
            deploy_id: "b".into()
        }
    );
}

#[test]
fn a_queued_deploy_says_what_it_waits_for() {
    let h = ServiceHandle::new("web");
    h.submit(release("a")).unwrap();
    let behind = |h: &ServiceHandle| match h.view().deploy("a") {
        Some(DeployState::Queued { behind, .. }) => behind,
        other => panic!("{other:?}"),
    };
    assert_eq!(behind(&h), Some("start-up recovery".into()));
    h.publish(|v| {
        v.set_state(
            State::Repairing,
            Some("container 1a2b exited with code 137".into()),
        )
    });
    assert_eq!(
        behind(&h),
        Some("a repair (container 1a2b exited with code 137)".into())
    );
    h.publish(|v| v.set_state(State::Serving, None));
    assert_eq!(behind(&h), None);
}

#[test]
fn queue_survives_a_restart_through_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("web.queue.json");
    {
        let h = ServiceHandle::open("web", Some(path.clone())).unwrap();
        h.submit(release("a")).unwrap();
        h.submit(release("b")).unwrap();
    }
    let h = ServiceHandle::open("web", Some(path)).unwrap();
    let v = h.view();
    assert_eq!(v.queued, vec![release("b")]);
    assert_eq!(v.superseded.len(), 1);
}

#[tokio::test]
async fn every_superseded_deploy_waits_journaled_until_answered_and_a_full_backlog_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("web.json");
    let h = ServiceHandle::open("web", Some(path.clone())).unwrap();
    for i in 0..=UNANSWERED_MAX {
        h.submit(release(&format!("r{i}"))).unwrap();
    }
    // r0..r255 superseded, r256 queued: one more would leave 257 unanswered
    let err = h.submit(release("over")).unwrap_err();
    assert!(
        matches!(
            err,
            QueueError::Full {
                waiting: UNANSWERED_MAX,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("try again"), "{err}");
    assert_eq!(
        h.view().queued,
        vec![release(&format!("r{UNANSWERED_MAX}"))]
    );
    // a restart still owes them their answers
    drop(h);
    let h = ServiceHandle::open("web", Some(path.clone())).unwrap();
    let batch = h.unanswered(1000).await;
    assert_eq!(batch.len(), UNANSWERED_MAX);
    assert_eq!(batch[0].release.deploy_id, "r0");
    assert_eq!(batch[0].by, "r1");
    h.answered(&batch[..200]).unwrap();
    // answered ones are still known, beyond the 50 the view keeps
    assert_eq!(
        h.deploy("r0"),
        Some(DeployState::Superseded {
            release: None,
            by: "r1".into()
        })
    );
    assert!(matches!(
        h.deploy("r250"),
        Some(DeployState::Superseded {
            release: Some(_),
            ..
        })
    ));
    assert_eq!(
        h.submit(release("r3")).unwrap(),
        Submitted::Existing {
            deploy_id: "r3".into()
        },
        "an answered deploy id is not run again"
    );
    h.submit(release("next")).unwrap();
    drop(h);
    let h = ServiceHandle::open("web", Some(path)).unwrap();
    assert_eq!(h.unanswered(1000).await.len(), UNANSWERED_MAX - 200 + 1);
}

#[test]
fn a_damaged_queue_file_is_moved_aside_and_named() {
    let dir = tempfile::tempdir().unwrap();
    for (n, bytes) in [&b"{\"queued\": [tru"[..], &[0u8, 7, 255, 1][..]]
        .iter()
        .enumerate()
    {
        let path = dir.path().join(format!("web{n}.json"));
        std::fs::write(&path, bytes).unwrap();
        let h = ServiceHandle::open("web", Some(path.clone())).unwrap();
        let note = h.take_damaged().unwrap();
        assert!(
            note.contains(&path.display().to_string()) && note.contains("moved to"),
            "{note}"
        );
        assert!(!path.exists());
        assert!(h.view().queued.is_empty());
    }
    let fifo = dir.path().join("fifo.json");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let h = ServiceHandle::open("web", Some(fifo)).unwrap();
    assert!(h.take_damaged().unwrap().contains("not a regular file"));
    let zero = dir.path().join("zero.json");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    let h = ServiceHandle::open("web", Some(zero.clone())).unwrap();
    assert!(h.take_damaged().is_some());
    assert!(
        std::fs::symlink_metadata(&zero).is_err(),
        "the link moved, not /dev/zero"
    );
}

#[test]
fn a_queue_that_cannot_be_journaled_refuses_the_release() {
    let dir = tempfile::tempdir().unwrap();
    let h = ServiceHandle::open("web", Some(dir.path().join("missing-dir/web.json"))).unwrap();
    let err = h.submit(release("a")).unwrap_err().to_string();
    assert!(err.contains("missing-dir"), "{err}");
    assert!(h.view().queued.is_empty());
}
