use super::*;

fn node(id: &str) -> NodeRef {
    NodeRef { id: id.into(), hostname: format!("host-{id}"), down: false }
}

fn read(follow: bool) -> LogSubscription {
    LogSubscription { service_id: "svc".into(), follow, tail: -1, ..LogSubscription::default() }
}

fn lines(n: usize) -> ReaderItem {
    Ok(ServiceLogsMessage { warnings: vec![format!("{n}")], ..ServiceLogsMessage::default() })
}

#[tokio::test]
async fn a_read_goes_to_the_holders_and_ends_when_each_has_finished() {
    let broker = Arc::new(LogBroker::default());
    let mut n1 = broker.listen("n1", "s1");
    let mut n2 = broker.listen("n2", "s2");
    let mut n3 = broker.listen("n3", "s3");
    let mut open = broker.open(read(false), &[node("n1"), node("n2")]).expect("opened");
    let sent = n1.try_recv().expect("n1 asked");
    assert_eq!(n2.try_recv().expect("n2 asked").id, sent.id);
    assert!(n3.try_recv().is_err(), "a node without the service's tasks is not asked");
    assert!(broker.publisher(&sent.id, "n3").is_none(), "nor may it publish");

    let (publisher, _) = broker.publisher(&sent.id, "n1").expect("n1 publishes");
    publisher.send(lines(1)).await.unwrap();
    drop(publisher);
    broker.finished(&sent.id, "n1");
    assert_eq!(open.rx.recv().await.unwrap().unwrap().warnings, vec!["1"]);
    assert_eq!(broker.open_reads(), 1, "n2 has not finished");
    broker.finished(&sent.id, "n2");
    assert_eq!(broker.open_reads(), 0);
    assert!(open.rx.recv().await.is_none(), "the read ends once every holder finished");
}

#[tokio::test]
async fn a_holder_without_an_agent_is_named_in_a_warning_and_the_rest_stream() {
    let broker = Arc::new(LogBroker::default());
    let mut n1 = broker.listen("n1", "s1");
    let down = NodeRef { down: true, ..node("n2") };
    let mut open = broker.open(read(false), &[node("n1"), down, node("n3")]).expect("opened");
    let warnings = open.rx.recv().await.unwrap().unwrap().warnings;
    assert_eq!(
        warnings,
        vec![
            "node host-n2 (n2) is down: the logs of its tasks are not shown",
            "node host-n3 (n3) is not connected to the leader: the logs of its tasks are not shown",
        ]
    );
    let sent = n1.try_recv().expect("n1 asked");
    broker.finished(&sent.id, "n1");
    assert!(open.rx.recv().await.is_none());

    // Nobody to ask: the read ends after its warnings.
    let mut lonely = broker.open(read(false), &[node("n9")]).expect("opened");
    assert_eq!(lonely.rx.recv().await.unwrap().unwrap().warnings.len(), 1);
    assert!(lonely.rx.recv().await.is_none());
    assert_eq!(broker.open_reads(), 0);
}

#[tokio::test]
async fn following_asks_every_agent_and_those_that_connect_later() {
    let broker = Arc::new(LogBroker::default());
    let mut n1 = broker.listen("n1", "s1");
    let open = broker.open(read(true), &[]).expect("opened");
    let sent = n1.try_recv().expect("every connected agent is asked");
    assert!(!sent.from_now);
    let mut n2 = broker.listen("n2", "s2");
    let late = n2.try_recv().expect("an agent connecting later is asked too");
    assert_eq!(late.id, sent.id);
    assert!(late.from_now, "for lines from now on only, by its own clock");
    assert!(broker.publisher(&sent.id, "n2").is_some());
    broker.finished(&sent.id, "n1");
    assert_eq!(broker.open_reads(), 1, "a followed read ends only with its reader");

    drop(open);
    assert_eq!(broker.open_reads(), 0);
    let close = n2.try_recv().expect("the agents are told");
    assert!(close.close);
    assert_eq!(close.id, sent.id);
    assert!(broker.publisher(&sent.id, "n2").is_none(), "publishing to a closed read fails");
}

#[tokio::test]
async fn an_agent_going_away_mid_read_is_named_and_the_read_goes_on() {
    let broker = Arc::new(LogBroker::default());
    let _n1 = broker.listen("n1", "s1");
    let _n2 = broker.listen("n2", "s2");
    let mut open = broker.open(read(false), &[node("n1"), node("n2")]).expect("opened");
    broker.unlisten("n1", "old-session");
    assert_eq!(broker.open_reads(), 1, "another session's end changes nothing");
    broker.unlisten("n1", "s1");
    let warning = open.rx.recv().await.unwrap().unwrap().warnings;
    assert_eq!(warning, vec!["node n1 went away before sending all its logs"]);
    assert!(broker.publisher(&open.guard.id, "n1").is_none(), "its publisher may not go on");
    broker.unlisten("n2", "s2");
    open.rx.recv().await.unwrap().unwrap();
    assert!(open.rx.recv().await.is_none(), "no holder left: the read ends");
}

#[tokio::test]
async fn reads_are_bounded_in_number_and_in_what_waits_for_a_reader() {
    let broker = Arc::new(LogBroker::default());
    let _n1 = broker.listen("n1", "s1");
    let mut open: Vec<OpenRead> = (0..MAX_LOG_READS).map(|_| broker.open(read(true), &[]).expect("opened")).collect();
    let refused = broker.open(read(true), &[]).err().expect("one too many");
    assert!(matches!(refused, crate::ApiError::ResourceExhausted(_)), "{refused}");
    assert!(refused.to_string().contains("256 log reads are open already"), "{refused}");

    // A reader that does not read: its publishers wait once its queue is full.
    let first = open.remove(0);
    let id = broker.inner.lock().reads.keys().find(|id| **id == first.guard.id).cloned().unwrap();
    let (publisher, _) = broker.publisher(&id, "n1").unwrap();
    for n in 0..READER_QUEUE {
        publisher.try_send(lines(n)).expect("room in the queue");
    }
    assert!(publisher.try_send(lines(0)).is_err(), "the queue is bounded");
    drop(first);
    assert!(broker.open(read(true), &[]).is_ok(), "a closed read frees its place");
}

#[tokio::test]
async fn losing_leadership_ends_every_read_with_an_error() {
    let broker = Arc::new(LogBroker::default());
    let _n1 = broker.listen("n1", "s1");
    let mut open = broker.open(read(true), &[]).expect("opened");
    broker.close_all("the leader changed");
    let status = open.rx.recv().await.unwrap().unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert!(open.rx.recv().await.is_none());
}

#[tokio::test]
async fn an_agent_reconnecting_settles_its_reads_and_followers_are_told_of_the_gap() {
    let broker = Arc::new(LogBroker::default());
    let _old = broker.listen("n1", "s1");
    let _n2 = broker.listen("n2", "s2");
    let mut once = broker.open(read(false), &[node("n1"), node("n2")]).expect("opened");
    let mut follow = broker.open(read(true), &[]).expect("opened");
    // The agent's new session subscribes before its old stream is noticed gone.
    let mut new = broker.listen("n1", "s1-new");
    assert_eq!(
        once.rx.recv().await.unwrap().unwrap().warnings,
        vec!["node n1 reconnected before sending all its logs"],
        "a read without follow stops waiting for the old stream"
    );
    assert_eq!(
        follow.rx.recv().await.unwrap().unwrap().warnings,
        vec!["node n1 reconnected: lines its containers wrote meanwhile are not shown"]
    );
    let resent = new.try_recv().expect("the followed read goes to the new stream");
    assert!(resent.follow && resent.from_now);
    broker.unlisten("n1", "s1");
    assert!(broker.publisher(&resent.id, "n1").is_some(), "the old stream ending changes nothing now");
    broker.finished(&once.guard.id, "n2");
    assert!(once.rx.recv().await.is_none(), "the read without follow ends");
}

#[test]
fn a_selection_holds_the_read_s_service_or_tasks_only() {
    let broker = Arc::new(LogBroker::default());
    let _n1 = broker.listen("n1", "s1");
    let open = broker.open(read(true), &[]).expect("opened");
    let (_, selection) = broker.publisher(&open.guard.id, "n1").unwrap();
    assert!(selection.selects("svc", "t1"));
    assert!(!selection.selects("other", "t2"), "another service's task is not the read's");
    let by_task = Selection { service_id: String::new(), task_ids: vec!["t2".into()] };
    assert!(by_task.selects("other", "t2") && !by_task.selects("svc", "t1"));
}
