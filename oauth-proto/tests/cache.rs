//! The token cache on virtual time: refresh-ahead, single flight, failures
//! while a token is valid, backoff and Retry-After, invalidation after an SMTP
//! rejection, refresh-token rotation, and timers that never spin.

use std::time::{Duration, Instant};

use postern_oauth::{
    CacheConfig, CacheEvent, FetchError, OAuthError, Secret, TokenCache, TokenResponse,
};

fn token(value: &str, secs: u64) -> TokenResponse {
    TokenResponse::bearer(Secret::new(value), Some(Duration::from_secs(secs)))
}

fn s(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[test]
fn single_flight_under_many_callers_then_cached() {
    let t0 = Instant::now();
    let mut c = TokenCache::new(CacheConfig::default(), None);
    let first = c.lookup(t0);
    let fetch = first.fetch.expect("first caller fetches");
    assert!(first.token.is_none());
    for i in 0..1000 {
        let l = c.lookup(t0 + Duration::from_millis(i));
        assert!(
            l.fetch.is_none() && l.token.is_none(),
            "caller {i} must wait"
        );
        assert_eq!(
            l.retry_at,
            Some(t0 + s(60)),
            "waiters are told when the fetch times out"
        );
    }
    // The response arrives 2 s later; expiry counts from the send time.
    assert!(c.handle_token(t0 + s(2), fetch, token("a", 3600)));
    let l = c.lookup(t0 + s(2));
    let t = l.token.expect("cached");
    assert_eq!(t.token.expose(), "a");
    assert_eq!(t.expires_at, t0 + s(3600));
    assert_eq!(t.refresh_at, t0 + s(3300));
    assert!(l.fetch.is_none());
    // A stale ticket is ignored.
    assert!(!c.handle_token(t0 + s(3), fetch, token("b", 3600)));
}

#[test]
fn refresh_ahead_serves_the_old_token_meanwhile() {
    let t0 = Instant::now();
    let mut c = TokenCache::new(CacheConfig::default(), None);
    let f = c.lookup(t0).fetch.unwrap();
    c.handle_token(t0, f, token("old", 3600));
    assert_eq!(c.poll_timeout(), Some(t0 + s(3300)));
    // The timer starts the background refresh.
    let bg = c.handle_timeout(t0 + s(3300)).expect("refresh due");
    assert!(c.poll_timeout().unwrap() > t0 + s(3300));
    let l = c.lookup(t0 + s(3301));
    assert_eq!(l.token.unwrap().token.expose(), "old");
    assert!(l.fetch.is_none(), "single flight during refresh-ahead");
    c.handle_token(t0 + s(3302), bg, token("new", 3600));
    assert_eq!(c.lookup(t0 + s(3302)).token.unwrap().token.expose(), "new");
    // A caller arriving past refresh_at with no timer fired gets the token and the ticket.
    let l = c.lookup(t0 + s(3300 + 3300));
    assert_eq!(l.token.unwrap().token.expose(), "new");
    assert!(l.fetch.is_some());
}

#[test]
fn short_lifetimes_refresh_at_half_life_and_refresh_in_is_honoured() {
    let t0 = Instant::now();
    let mut c = TokenCache::new(CacheConfig::default(), None);
    let f = c.lookup(t0).fetch.unwrap();
    c.handle_token(t0, f, token("short", 8));
    let t = c.lookup(t0).token.unwrap();
    assert_eq!(t.refresh_at, t0 + s(4));
    // Never served within the expiry margin (capped to the refresh window).
    assert!(c.lookup(t0 + s(4)).token.is_none());
    let f = c.lookup(t0 + s(5)).fetch;
    assert!(f.is_none(), "the refresh ticket went to the caller at 4 s");
    let mut c = TokenCache::new(CacheConfig::default(), None);
    let f = c.lookup(t0).fetch.unwrap();
    let mut r = token("ms", 3600);
    r.refresh_in = Some(s(1800));
    c.handle_token(t0, f, r);
    assert_eq!(c.lookup(t0).token.unwrap().refresh_at, t0 + s(1800));
}

#[test]
fn failed_refresh_keeps_the_valid_token_and_backs_off() {
    let t0 = Instant::now();
    let mut c = TokenCache::new(CacheConfig::default(), None);
    let f = c.lookup(t0).fetch.unwrap();
    c.handle_token(t0, f, token("a", 3600));
    let f = c.handle_timeout(t0 + s(3300)).unwrap();
    c.handle_failure(
        t0 + s(3301),
        f,
        FetchError::Transport("connection refused".into()),
    );
    let l = c.lookup(t0 + s(3301));
    assert_eq!(l.token.unwrap().token.expose(), "a");
    assert!(l.fetch.is_none(), "backing off for 1 s");
    let f = c.lookup(t0 + s(3302)).fetch.expect("backoff over");
    c.handle_failure(t0 + s(3302), f, FetchError::Transport("again".into()));
    assert!(c.lookup(t0 + s(3303)).fetch.is_none(), "2 s backoff");
    let f = c.lookup(t0 + s(3304)).fetch.expect("after 2 s");
    // Retry-After longer than the backoff wins.
    c.handle_failure(
        t0 + s(3304),
        f,
        FetchError::Retry {
            status: 429,
            after: Some(s(30)),
        },
    );
    assert!(c.lookup(t0 + s(3320)).fetch.is_none());
    assert_eq!(c.poll_timeout(), Some(t0 + s(3334)));
    assert!(c.lookup(t0 + s(3334)).fetch.is_some());
}

#[test]
fn permanent_errors_are_reported_to_waiters_and_backoff_caps() {
    let t0 = Instant::now();
    let cfg = CacheConfig::default();
    let mut c = TokenCache::new(cfg, None);
    let mut now = t0;
    let mut last_delay = Duration::ZERO;
    for _ in 0..20 {
        let l = c.lookup(now);
        let f = l.fetch.expect("fetch after backoff");
        let mut e = OAuthError::new(401, "invalid_client");
        e.error_codes = vec![7000215];
        c.handle_failure(now, f, FetchError::OAuth(e));
        let l = c.lookup(now);
        assert!(
            matches!(l.last_error, Some(FetchError::OAuth(ref e)) if e.error == "invalid_client")
        );
        let until = l.retry_at.expect("backoff end");
        last_delay = until - now;
        assert!(last_delay <= cfg.backoff_max);
        now = until;
    }
    assert_eq!(last_delay, cfg.backoff_max);
}

#[test]
fn invalidate_after_a_535_fetches_once() {
    let t0 = Instant::now();
    let mut c = TokenCache::new(CacheConfig::default(), None);
    let f = c.lookup(t0).fetch.unwrap();
    c.handle_token(t0, f, token("revoked", 3600));
    c.invalidate(t0 + s(10));
    let l = c.lookup(t0 + s(10));
    assert!(l.token.is_none());
    let f = l.fetch.expect("one new fetch");
    assert!(
        c.lookup(t0 + s(10)).fetch.is_none(),
        "single flight after invalidate"
    );
    c.handle_token(t0 + s(11), f, token("fresh", 3600));
    assert_eq!(c.lookup(t0 + s(11)).token.unwrap().token.expose(), "fresh");
}

#[test]
fn rotation_is_an_event_and_the_latest_refresh_token_is_used() {
    let t0 = Instant::now();
    let mut c = TokenCache::new(CacheConfig::default(), Some(Secret::new("rt-1")));
    assert_eq!(c.refresh_token().unwrap().expose(), "rt-1");
    let f = c.lookup(t0).fetch.unwrap();
    let mut r = token("a", 3600);
    r.refresh_token = Some(Secret::new("rt-1"));
    c.handle_token(t0, f, r);
    assert_eq!(
        c.poll_event(),
        None,
        "the same refresh token is no rotation"
    );
    c.invalidate(t0);
    let f = c.lookup(t0).fetch.unwrap();
    let mut r = token("b", 3600);
    r.refresh_token = Some(Secret::new("rt-2"));
    c.handle_token(t0, f, r);
    assert_eq!(
        c.poll_event(),
        Some(CacheEvent::RefreshTokenRotated(Secret::new("rt-2")))
    );
    assert_eq!(c.refresh_token().unwrap().expose(), "rt-2");
    // A response without a refresh token keeps the stored one.
    c.invalidate(t0);
    let f = c.lookup(t0).fetch.unwrap();
    c.handle_token(t0, f, token("c", 3600));
    assert_eq!(c.refresh_token().unwrap().expose(), "rt-2");
}

#[test]
fn unreported_fetches_time_out_and_timers_never_spin() {
    let t0 = Instant::now();
    let mut c = TokenCache::new(CacheConfig::default(), None);
    let f = c.lookup(t0).fetch.unwrap();
    let deadline = c.poll_timeout().unwrap();
    assert_eq!(deadline, t0 + s(60));
    assert!(c.handle_timeout(t0 + s(30)).is_none());
    assert!(c.handle_timeout(deadline).is_none());
    assert!(!c.fetching());
    assert!(
        !c.handle_token(deadline, f, token("late", 3600)),
        "a timed-out ticket is void"
    );
    let mut now = deadline;
    // Whatever happens, after handle_timeout the next deadline is in the future.
    for step in 0..200u64 {
        if let Some(f) = c.handle_timeout(now) {
            if step % 3 == 0 {
                c.handle_failure(now, f, FetchError::TimedOut);
            } else {
                c.handle_token(now, f, token("t", 5 + step % 50));
            }
        }
        if let Some(f) = c.lookup(now).fetch {
            c.handle_token(now, f, token("t", 5 + step % 50));
        }
        let _ = c.handle_timeout(now);
        match c.poll_timeout() {
            Some(next) => {
                assert!(next > now, "step {step}");
                now = next;
            }
            None => now += s(1),
        }
    }
}
