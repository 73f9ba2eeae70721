use super::*;
use crate::{Collected, DeployOutcome, Retention};
use gust_api::Share;

fn targz(files: &[(&str, &str, u32)]) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let gz = flate2::write::GzEncoder::new(&mut out, flate2::Compression::fast());
        let mut b = tar::Builder::new(gz);
        for (path, data, mode) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(*mode);
            h.set_cksum();
            b.append_data(&mut h, path, data.as_bytes()).unwrap();
        }
        b.into_inner().unwrap().finish().unwrap();
    }
    out
}

const MANIFEST: &str = "name = \"hello\"\nruntime = \"python\"\n";

#[test]
fn deploy_numbers_revisions_and_dedupes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), ArchiveLimits::default()).unwrap();
    let a = targz(&[("gust.toml", MANIFEST, 0o644), ("handler.py", "def handle(e, c): pass", 0o644)]);
    let first = store.deploy(&a[..]).unwrap();
    assert!(first.changed);
    assert_eq!(first.revision.id.to_string(), "hello-00001");
    let again = store.deploy(&a[..]).unwrap();
    assert!(!again.changed);
    assert_eq!(again.revision.id.to_string(), "hello-00001");

    let b = targz(&[("gust.toml", MANIFEST, 0o644), ("handler.py", "def handle(e, c): return 1", 0o644)]);
    let second = store.deploy(&b[..]).unwrap();
    assert_eq!(second.revision.id.to_string(), "hello-00002");
    assert!(second.revision.code_dir.join("handler.py").is_file());

    // Config alone changes a revision too.
    let c = targz(&[
        ("gust.toml", &format!("{MANIFEST}[env]\nX = \"1\"\n"), 0o644),
        ("handler.py", "def handle(e, c): return 1", 0o644),
    ]);
    let third = store.deploy(&c[..]).unwrap();
    assert_eq!(third.revision.id.to_string(), "hello-00003");
}

#[test]
fn survives_reopen_and_remove() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path(), ArchiveLimits::default()).unwrap();
        store.deploy(&targz(&[("gust.toml", MANIFEST, 0o644), ("handler.py", "", 0o644)])[..]).unwrap();
    }
    let store = Store::open(dir.path(), ArchiveLimits::default()).unwrap();
    let serving = store.serving_all().unwrap();
    assert_eq!(serving.len(), 1);
    assert_eq!(serving[0].revisions[0].spec.name.as_str(), "hello");
    let name = FunctionName::new("hello").unwrap();
    store.remove(&name).unwrap();
    assert!(store.serving_all().unwrap().is_empty());
    assert!(matches!(store.remove(&name), Err(Error::NotFound { .. })));
    assert!(matches!(store.revisions(&name), Err(Error::NotFound { .. })));
}

#[test]
fn manifest_and_handler_problems() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), ArchiveLimits::default()).unwrap();
    let no_manifest = store.deploy(&targz(&[("handler.py", "", 0o644)])[..]).unwrap_err();
    assert!(no_manifest.to_string().contains("no gust.toml"), "{no_manifest}");
    let missing = store.deploy(&targz(&[("gust.toml", MANIFEST, 0o644)])[..]).unwrap_err();
    assert!(missing.to_string().contains("handler.py"), "{missing}");
    let exec = "name = \"e\"\nruntime = \"exec\"\nhandler = \"run\"\n";
    let not_x = store.deploy(&targz(&[("gust.toml", exec, 0o644), ("run", "#!/bin/sh", 0o644)])[..]).unwrap_err();
    assert!(not_x.to_string().contains("chmod +x"), "{not_x}");
    store.deploy(&targz(&[("gust.toml", exec, 0o644), ("run", "#!/bin/sh", 0o755)])[..]).unwrap();
}

fn deploy_with(store: &Store, body: &str, traffic: DeployTraffic) -> Result<DeployOutcome> {
    deploy_checked(store, body, traffic, Ok(()))
}

/// A deploy whose start-up check ends with `check`.
fn deploy_checked(
    store: &Store,
    body: &str,
    traffic: DeployTraffic,
    check: std::result::Result<(), String>,
) -> Result<DeployOutcome> {
    let mut staged = store.stage(&targz(&[("gust.toml", MANIFEST, 0o644), ("handler.py", body, 0o644)])[..]).unwrap();
    staged.traffic = traffic.clone();
    let outcome = store.commit(staged, None)?;
    if outcome.changed {
        store.settle(&outcome.revision.id, check, &traffic)?;
    }
    Ok(outcome)
}

fn numbers(revisions: &[Revision]) -> Vec<u32> {
    revisions.iter().map(|r| r.id.number()).collect()
}

#[test]
fn traffic_follows_deploys_unless_told_and_refused_changes_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), ArchiveLimits::default()).unwrap();
    let name = FunctionName::new("hello").unwrap();
    let quiet = |tag: &str| DeployTraffic { no_traffic: true, tag: Some(tag.to_owned()) };
    let first = deploy_with(&store, "a", quiet("x")).unwrap_err();
    assert!(first.to_string().contains("with no revision of the function ready"), "{first}");
    deploy_with(&store, "a", DeployTraffic::default()).unwrap();
    deploy_with(&store, "b", quiet("candidate")).unwrap();
    let s = store.serving(&name).unwrap();
    assert_eq!((s.latest, s.traffic.resolve(s.latest)), (Some(2), vec![(1, 100)]));
    assert_eq!(s.traffic.tags_of(2), vec!["candidate".to_owned()]);
    assert_eq!(s.revisions.iter().map(|r| r.id.number()).collect::<Vec<_>>(), vec![2, 1]);

    let before = store.serving(&name).unwrap().traffic;
    let refused = store.update_traffic(&name, false, |t, _, _| {
        let mut t = t.clone();
        t.split[0].percent = 90;
        Ok(t)
    });
    assert!(matches!(refused, Err(Error::BadTraffic { .. })), "{refused:?}");
    assert_eq!(store.serving(&name).unwrap().traffic, before);

    // A plain deploy takes every call again and keeps the tag.
    deploy_with(&store, "c", DeployTraffic::default()).unwrap();
    drop(store);
    let store = Store::open(dir.path(), ArchiveLimits::default()).unwrap();
    let s = store.serving(&name).unwrap();
    assert_eq!(s.traffic.resolve(s.latest), vec![(3, 100)]);
    assert_eq!(s.traffic.tags_of(2), vec!["candidate".to_owned()]);
    assert_eq!(s.revisions.iter().map(|r| r.id.number()).collect::<Vec<_>>(), vec![3, 2]);
}

#[test]
fn a_revision_is_pending_until_its_check_and_a_failed_one_takes_nothing_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), ArchiveLimits::default()).unwrap();
    let name = FunctionName::new("hello").unwrap();
    let tagged = |tag: &str| DeployTraffic { no_traffic: false, tag: Some(tag.to_owned()) };

    // A first revision that fails: the function exists, serves nothing, and says why.
    deploy_checked(&store, "a", DeployTraffic::default(), Err("exited with status 3".into())).unwrap();
    let s = store.serving(&name).unwrap();
    assert_eq!((s.latest, s.revisions.len()), (None, 0));
    assert_eq!(s.failure.as_deref(), Some("hello-00001 failed to start: exited with status 3"));
    let refused = store.update_traffic(&name, false, |t, _, _| Ok(t.clone())).unwrap_err();
    assert!(refused.to_string().contains("no revision of hello has started yet"), "{refused}");

    // The same code again is a retry, so a new revision.
    let retry = deploy_with(&store, "a", DeployTraffic::default()).unwrap();
    assert_eq!((retry.changed, retry.revision.id.number()), (true, 2));
    deploy_with(&store, "b", DeployTraffic::default()).unwrap();

    // Pending: committed, not yet settled, takes nothing; the tag waits for it too.
    let mut staged =
        store.stage(&targz(&[("gust.toml", MANIFEST, 0o644), ("handler.py", "broken", 0o644)])[..]).unwrap();
    staged.traffic = tagged("next");
    let pending = store.commit(staged, None).unwrap().revision;
    assert_eq!(pending.status, RevisionStatus::Pending);
    let s = store.serving(&name).unwrap();
    assert_eq!((s.latest, s.traffic.resolve(s.latest), s.traffic.tags.len()), (Some(3), vec![(3, 100)], 0));
    let early = store.update_traffic(&name, false, |t, _, _| {
        let mut t = t.clone();
        t.split[0].revision = Some(4);
        Ok(t)
    });
    assert!(early.unwrap_err().to_string().contains("still being started"));

    // It fails: 3 keeps every call, 4 gets no tag, and only force can route to it.
    let s = store.settle(&pending.id, Err("Traceback: SyntaxError".into()), &tagged("next")).unwrap();
    assert_eq!((s.latest, s.traffic.resolve(s.latest), numbers(&s.revisions)), (Some(3), vec![(3, 100)], vec![3]));
    assert!(s.traffic.tags.is_empty());
    let (revs, ..) = store.revisions(&name).unwrap();
    assert_eq!((revs[0].status, revs[0].failure.as_deref()), (RevisionStatus::Failed, Some("Traceback: SyntaxError")));
    let to_failed = |t: &Traffic| {
        let mut t = t.clone();
        t.split = vec![Share { revision: Some(4), percent: 100 }];
        Ok(t)
    };
    let refused = store.update_traffic(&name, false, |t, _, _| to_failed(t)).unwrap_err();
    assert!(refused.to_string().contains("hello-00004 failed to start"), "{refused}");
    // Rollback is offered the ready revisions only.
    store
        .update_traffic(&name, false, |_, _, ready| {
            assert_eq!(ready, [2, 3]);
            Ok(Traffic::latest())
        })
        .unwrap();
    let forced = store.update_traffic(&name, true, |t, _, _| to_failed(t)).unwrap();
    assert_eq!(numbers(&forced.revisions), vec![4, 3]);

    // A revision left pending by a server that stopped is failed when the store opens.
    let staged = store.stage(&targz(&[("gust.toml", MANIFEST, 0o644), ("handler.py", "c", 0o644)])[..]).unwrap();
    store.commit(staged, None).unwrap();
    drop(store);
    let store = Store::open(dir.path(), ArchiveLimits::default()).unwrap();
    let (revs, latest, _) = store.revisions(&name).unwrap();
    assert_eq!((revs[0].id.number(), revs[0].status, latest), (5, RevisionStatus::Failed, Some(3)));
    assert!(revs[0].failure.as_deref().unwrap_or_default().contains("gust stopped"));
}

#[test]
fn old_revisions_out_of_service_and_their_unused_code_are_collected() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), ArchiveLimits::default()).unwrap();
    let name = FunctionName::new("hello").unwrap();
    for body in ["a", "b", "c", "d", "e", "a"] {
        deploy_with(&store, body, DeployTraffic::default()).unwrap();
    }
    // Tag 1 so it stays.
    store
        .update_traffic(&name, false, |t, _, _| {
            let mut t = t.clone();
            t.tag("pinned", 1)?;
            Ok(t)
        })
        .unwrap();
    let code_dirs = || fs::read_dir(dir.path().join("code")).unwrap().count();
    assert_eq!(code_dirs(), 5);
    let now = SystemTime::now();
    let young = Retention { keep: 1, max_age: Duration::from_secs(3600), ..Retention::default() };
    assert_eq!(store.collect_garbage(young, now, |_| false).unwrap(), Collected::default(), "none old enough");

    // Out of service, newest first: 5, 4, 3, 2. Keep one; 3 still runs (draining).
    let old = Retention { keep: 1, max_age: Duration::ZERO, ..Retention::default() };
    let got = store.collect_garbage(old, now, |r| r.number() == 3).unwrap();
    assert_eq!(got.revisions.iter().map(RevisionId::number).collect::<Vec<_>>(), vec![4, 2]);
    // Code `b` (2) and `d` (4) went; `a` is shared by 1 and 6.
    assert_eq!((got.code_dirs.len(), code_dirs()), (2, 3));
    let (revs, ..) = store.revisions(&name).unwrap();
    assert_eq!(numbers(&revs), vec![6, 5, 3, 1]);
    assert!(revs.iter().all(|r| r.code_dir.is_dir()));

    // The cap applies whatever the age; a removed function's code goes too.
    let capped = Retention { keep: 20, max_age: Duration::from_secs(3600), max: 0 };
    let got = store.collect_garbage(capped, now, |_| false).unwrap();
    assert_eq!(got.revisions.iter().map(RevisionId::number).collect::<Vec<_>>(), vec![5, 3]);
    store.remove(&name).unwrap();
    store.collect_garbage(Retention::default(), now, |_| false).unwrap();
    assert_eq!(code_dirs(), 0);
}

#[test]
fn async_calls_are_claimed_retried_dead_lettered_redriven_and_survive_a_reopen() {
    use crate::{Attempted, CallStatus, NewCall};
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), ArchiveLimits::default()).unwrap();
    let call = |id: &str, function: &str| NewCall {
        id: gust_api::CallId::from_caller(Some(id.as_bytes())),
        function: function.into(),
        method: "POST".into(),
        path: "/x?y=1".into(),
        headers: vec![("content-type".into(), "text/plain".into())],
        body: b"hi".to_vec(),
        callback_url: None,
    };
    assert!(store.enqueue(&call("c1", "f"), 0).unwrap());
    assert!(store.enqueue(&call("c2", "g"), 0).unwrap());
    assert!(!store.enqueue(&call("c1", "f"), 0).unwrap(), "a repeated id of the same function is a retry");
    assert!(matches!(store.enqueue(&call("c1", "g"), 0), Err(Error::CallIdTaken { .. })));

    // Only what `take` accepts is claimed, and it is running with one attempt.
    let now = now_ms() + 1;
    let got = store.claim(now, |f| f == "f").unwrap();
    assert_eq!(got.iter().map(|c| c.call.id.as_str()).collect::<Vec<_>>(), ["c1"]);
    assert_eq!((got[0].status, got[0].attempts, got[0].call.body.as_slice()), (CallStatus::Running, 1, &b"hi"[..]));
    assert!(store.claim(now, |_| true).unwrap().iter().all(|c| c.call.id.as_str() == "c2"));

    // A retry is queued for later and not due before then.
    let retry = Attempted {
        revision: Some("f-00001".into()),
        cold_start: Some(true),
        result: None,
        error: Some("timed out".into()),
        retry_at_ms: Some(now + 60_000),
        status: CallStatus::Queued,
    };
    store.attempted(&got[0].call.id, &retry).unwrap();
    assert!(store.claim(now, |_| true).unwrap().is_empty());
    let again = store.claim(now + 60_000, |_| true).unwrap();
    assert_eq!((again[0].attempts, again[0].error.as_deref()), (2, Some("timed out")));
    let dead = Attempted { retry_at_ms: None, status: CallStatus::Dead, ..retry };
    store.attempted(&again[0].call.id, &dead).unwrap();
    assert_eq!(store.calls("f", Some(CallStatus::Dead), 10).unwrap().len(), 1);
    assert_eq!(store.pending_calls("f").unwrap(), 0);

    // Redriven: queued with its attempts counted afresh; purged: gone.
    assert_eq!(store.redrive("f", None).unwrap(), 1);
    let c = store.call("c1").unwrap().unwrap();
    assert_eq!((c.status, c.attempts), (CallStatus::Queued, 0));
    // c2 was left running: a reopen queues it again, its attempt still counted.
    drop(store);
    let store = Store::open(dir.path(), ArchiveLimits::default()).unwrap();
    let c2 = store.call("c2").unwrap().unwrap();
    assert_eq!((c2.status, c2.attempts), (CallStatus::Queued, 1));
    let claimed = store.claim(now_ms() + 1, |_| true).unwrap();
    assert_eq!(claimed.len(), 2);
    for c in &claimed {
        store
            .attempted(&c.call.id, &Attempted { retry_at_ms: None, status: CallStatus::Dead, ..dead.clone() })
            .unwrap();
    }
    assert_eq!(store.purge("f", Some("c1")).unwrap(), 1);
    assert!(store.call("c1").unwrap().is_none());
    assert_eq!(store.calls("g", None, 10).unwrap().len(), 1);
}

#[test]
fn topics_keep_order_per_key_commit_offsets_and_trim_by_age_and_size() {
    use crate::TopicInfo;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), ArchiveLimits::default()).unwrap();
    let t = TopicInfo { name: "numbers".into(), partitions: 4, retention_ms: 3_600_000, retention_bytes: 10 };
    store.create_topic(&t).unwrap();
    assert!(matches!(store.create_topic(&t), Err(Error::TopicExists { .. })));
    assert!(matches!(store.publish("nope", None, b"x", 0), Err(Error::TopicNotFound { .. })));

    // One key, one partition, offsets in order.
    let placed: Vec<(u32, i64)> =
        (0..3).map(|i| store.publish("numbers", Some("k"), &[b'0' + i], 7).unwrap()).collect();
    let p = placed[0].0;
    assert!(placed.iter().all(|(q, _)| *q == p));
    assert_eq!(placed.iter().map(|(_, o)| *o).collect::<Vec<_>>(), [0, 1, 2]);
    let other = store.publish("numbers", None, b"z", p + 5).unwrap().0;
    assert_eq!(other, (p + 1) % 4, "no key: the fallback, modulo the partitions");

    // A consumer reads from its committed offset on.
    assert_eq!(store.committed("sq", "numbers", p).unwrap(), 0);
    let m = store.next_message("numbers", p, 0).unwrap().unwrap();
    assert_eq!((m.offset, m.body.as_slice(), m.key.as_deref()), (0, &b"0"[..], Some("k")));
    store.commit_offset("sq", "numbers", p, 1).unwrap();
    store.commit_offset("sq", "numbers", p, 0).unwrap();
    assert_eq!(store.committed("sq", "numbers", p).unwrap(), 1, "offsets never go back");
    assert_eq!(store.next_message("numbers", p, 3).unwrap().map(|m| m.offset), None);

    // Size: 12 bytes of 1-byte bodies against a 10-byte cap keeps the newest 10.
    for i in 0..9 {
        store.publish("numbers", Some("k"), &[b'a' + i], 0).unwrap();
    }
    let state = store.partitions("numbers").unwrap().into_iter().find(|s| s.partition == p).unwrap();
    assert_eq!((state.start, state.end), (2, 12));
    // Age: with no age left, all but the newest go; offsets continue where they were.
    let short = TopicInfo { name: "brief".into(), partitions: 1, retention_ms: -1, retention_bytes: 1 << 20 };
    store.create_topic(&short).unwrap();
    for _ in 0..3 {
        store.publish("brief", None, b"x", 0).unwrap();
    }
    store.trim_topics().unwrap();
    assert_eq!(store.partitions("brief").unwrap()[0], crate::PartitionState { partition: 0, end: 3, start: 2 });
    store.remove_topic("brief").unwrap();
    assert!(matches!(store.topic("brief"), Err(Error::TopicNotFound { .. })));
    store.create_topic(&short).unwrap();
    assert_eq!(store.publish("brief", None, b"x", 0).unwrap(), (0, 0), "a new topic of the same name starts over");
}

#[test]
fn a_queue_cap_counts_the_pending_calls_of_one_function() {
    use crate::NewCall;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), ArchiveLimits::default()).unwrap();
    let call = |id: &str, function: &str| NewCall {
        id: gust_api::CallId::from_caller(Some(id.as_bytes())),
        function: function.into(),
        method: "POST".into(),
        path: "/x?y=1".into(),
        headers: vec![("content-type".into(), "text/plain".into())],
        body: b"hi".to_vec(),
        callback_url: None,
    };
    assert!(store.enqueue(&call("a1", "f"), 2).unwrap());
    assert!(store.enqueue(&call("a2", "f"), 2).unwrap());
    assert!(matches!(store.enqueue(&call("a3", "f"), 2), Err(Error::QueueFull { max: 2, .. })));
    assert!(!store.enqueue(&call("a1", "f"), 2).unwrap(), "a retry of a stored call is not refused");
    assert!(store.enqueue(&call("b1", "g"), 2).unwrap(), "other functions have their own room");
    assert!(matches!(store.enqueue_all(&[call("b2", "g"), call("b3", "g")], |_| 2), Err(Error::QueueFull { .. })));
    assert!(store.enqueue_all(&[call("b2", "g")], |_| 2).is_ok());
    assert!(store.enqueue(&call("a3", "f"), 0).unwrap(), "0 is no cap");
}

#[test]
fn sync_calls_are_found_by_id_listed_with_async_ones_kept_first_and_pruned() {
    use crate::{CallStatus, NewCall, SyncRecord};
    use gust_api::CallId;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), ArchiveLimits::default()).unwrap();
    let base = now_ms();
    let sync = |id: CallId, function: &str, at: i64, status: u16| SyncRecord {
        id,
        function: function.into(),
        method: "GET".into(),
        path: "/p?q=1".into(),
        status,
        error: (status >= 500).then(|| "the function answered with a server error".into()),
        arrived_ms: at,
        answered_ms: at + 3,
        revision: Some(2),
        cold_start: Some(false),
    };
    let made = |at: i64| CallId::generate_at(u64::try_from(at).unwrap());
    // Gust's ids over three seconds, two functions; callers' ids, one given twice.
    let ours: Vec<CallId> = (0..6).map(|i| made(base + i * 700)).collect();
    let mut batch: Vec<SyncRecord> = ours
        .iter()
        .enumerate()
        .map(|(i, id)| sync(id.clone(), ["f", "g"][i % 2], base + i as i64 * 700, 200))
        .collect();
    batch.push(sync(CallId::from_caller(Some(b"mine")), "f", base - 100, 502));
    batch.push(sync(CallId::from_caller(Some(b"mine")), "f", base - 90, 200));
    store.record_sync(&batch).unwrap();
    // In a later batch: a caller reusing an id gust made earlier (recorded, as recording
    // does not search by time, but found after the first), and an async call's id.
    let queued = NewCall {
        id: CallId::from_caller(Some(b"queued-1")),
        function: "f".into(),
        method: "POST".into(),
        path: "/".into(),
        headers: Vec::new(),
        body: Vec::new(),
        callback_url: None,
    };
    assert!(store.enqueue(&queued, 0).unwrap());
    store
        .record_sync(&[sync(ours[0].clone(), "g", base + 5_000, 404), sync(queued.id.clone(), "f", base + 5_000, 200)])
        .unwrap();

    let c = store.call(ours[2].as_str()).unwrap().expect("found by its own time");
    assert_eq!((c.call.function.as_str(), c.status, c.attempts), ("f", CallStatus::Succeeded, 1));
    assert_eq!((c.accepted_ms, c.ended_ms, c.revision.as_deref()), (base + 1_400, Some(base + 1_403), Some("f-00002")));
    assert_eq!((c.call.method.as_str(), c.call.path.as_str(), c.cold_start), ("GET", "/p?q=1", Some(false)));
    assert_eq!(c.result.map(|r| r.status), Some(200));
    // The first record of an id is kept.
    let mine = store.call("mine").unwrap().expect("a caller's id");
    assert_eq!(
        (mine.status, mine.error.as_deref()),
        (CallStatus::Failed, Some("the function answered with a server error"))
    );
    assert_eq!(store.call(ours[0].as_str()).unwrap().unwrap().call.function, "f");
    assert_eq!(store.call("queued-1").unwrap().unwrap().status, CallStatus::Queued);
    assert!(store.call(made(base + 1).as_str()).unwrap().is_none());
    assert!(store.call("nobody").unwrap().is_none());

    // An async call may not take a sync call's id: its own function's is a retry.
    let reuse = |function: &str| NewCall { id: ours[1].clone(), function: function.into(), ..queued.clone() };
    assert!(!store.enqueue(&reuse("g"), 0).unwrap());
    assert!(matches!(store.enqueue(&reuse("f"), 0), Err(Error::CallIdTaken { .. })));

    // Newest first, sync and async together, by status, cut at the limit.
    let listed = |status, limit| -> Vec<String> {
        store.calls("f", status, limit).unwrap().iter().map(|c| c.call.id.to_string()).collect()
    };
    // (The async call was accepted at `base` or just after, so after ours[0].)
    let all = listed(None, 10);
    assert_eq!(all, [ours[4].as_str(), ours[2].as_str(), "queued-1", ours[0].as_str(), "mine"]);
    assert_eq!(listed(None, 2), all[..2]);
    assert_eq!(listed(Some(CallStatus::Failed), 10), ["mine"]);
    assert_eq!(listed(Some(CallStatus::Queued), 10), ["queued-1"]);

    // Pruned by when they ended; a reopened store still finds the rest.
    store.prune_calls(base + 500).unwrap();
    assert!(store.call("mine").unwrap().is_none());
    assert_eq!(store.call(ours[0].as_str()).unwrap().unwrap().call.function, "g", "the later use, now alone");
    drop(store);
    let store = Store::open(dir.path(), ArchiveLimits::default()).unwrap();
    assert!(store.call(ours[3].as_str()).unwrap().is_some());
    store.prune_calls(base + 60_000).unwrap();
    assert!(store.call(ours[5].as_str()).unwrap().is_none());
}
