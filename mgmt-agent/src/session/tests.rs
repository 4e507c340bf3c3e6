//! The session: seal and open, counters, splitting, and failures that
//! close it.

use super::*;

fn pair() -> (Session, Session) {
    let keys = derive_keys(&[7; 32], &[], &[9; 32]).unwrap();
    let pk = PublicKey([0; 32]);
    (
        Session::new(&keys, true, 1, pk).unwrap(),
        Session::new(&keys, false, 1, pk).unwrap(),
    )
}

#[test]
fn round_trip_both_directions() {
    let (mut c, mut s) = pair();
    let mut wire = Vec::new();
    c.send(&mut wire, &("hi", 5u32)).unwrap();
    c.send(&mut wire, &"again").unwrap();
    let mut r = wire.as_slice();
    assert_eq!(
        s.recv::<_, (String, u32)>(&mut r).unwrap(),
        ("hi".to_string(), 5)
    );
    assert_eq!(s.recv::<_, String>(&mut r).unwrap(), "again");
    let mut back = Vec::new();
    s.send(&mut back, &1u8).unwrap();
    assert_eq!(c.recv::<_, u8>(&mut back.as_slice()).unwrap(), 1);
}

#[test]
fn wrong_direction_fails() {
    let (mut c, _) = pair();
    let (mut c2, _) = pair();
    let mut wire = Vec::new();
    c.send(&mut wire, &1u8).unwrap();
    // A client's own frame reflected back at it does not decrypt.
    assert!(matches!(
        c2.recv::<_, u8>(&mut wire.as_slice()),
        Err(SessionError::Decrypt)
    ));
    assert!(matches!(
        c2.recv::<_, u8>(&mut wire.as_slice()),
        Err(SessionError::Closed)
    ));
}

#[test]
fn tamper_replay_reorder_fail_closed() {
    let (mut c, _) = pair();
    let mut f0 = Vec::new();
    let mut f1 = Vec::new();
    c.send(&mut f0, &0u8).unwrap();
    c.send(&mut f1, &1u8).unwrap();

    let (_, mut s) = pair();
    let mut bad = f0.clone();
    bad[5] ^= 1;
    assert!(matches!(
        s.recv_bytes(&mut bad.as_slice()),
        Err(SessionError::Decrypt)
    ));

    let (_, mut s) = pair();
    s.recv_bytes(&mut f0.as_slice()).unwrap();
    assert!(matches!(
        s.recv_bytes(&mut f0.as_slice()),
        Err(SessionError::Decrypt)
    ));

    let (_, mut s) = pair();
    assert!(matches!(
        s.recv_bytes(&mut f1.as_slice()),
        Err(SessionError::Decrypt)
    ));
    assert!(s.dead);
}

#[test]
fn recv_into_reuses_one_buffer_and_fails_closed() {
    let (mut c, _) = pair();
    let mut wire = Vec::new();
    c.send_bytes(&mut wire, b"first frame").unwrap();
    c.send_bytes(&mut wire, b"2nd").unwrap();
    let (f0, f1) = wire.split_at(4 + 11 + TAG_LEN);

    let (_, mut s) = pair();
    let mut buf = Vec::new();
    let mut r = wire.as_slice();
    let n = s.recv_into(&mut r, &mut buf).unwrap();
    assert_eq!(&buf[..n], b"first frame");
    let n = s.recv_into(&mut r, &mut buf).unwrap();
    assert_eq!(&buf[..n], b"2nd");
    assert!(matches!(
        s.recv_into(&mut r, &mut buf),
        Err(SessionError::Frame(FrameError::Closed))
    ));
    assert!(s.dead);

    // Tampered, replayed and reordered frames all fail and close.
    let mut bad = f0.to_vec();
    bad[6] ^= 1;
    let (_, mut s) = pair();
    assert!(matches!(
        s.recv_into(&mut bad.as_slice(), &mut buf),
        Err(SessionError::Decrypt)
    ));
    assert!(matches!(
        s.recv_into(&mut f0.to_vec().as_slice(), &mut buf),
        Err(SessionError::Closed)
    ));
    let (_, mut s) = pair();
    s.recv_into(&mut &f0[..], &mut buf).unwrap();
    assert!(matches!(
        s.recv_into(&mut &f0[..], &mut buf),
        Err(SessionError::Decrypt)
    ));
    let (_, mut s) = pair();
    assert!(matches!(
        s.recv_into(&mut &f1[..], &mut buf),
        Err(SessionError::Decrypt)
    ));
    // A frame cut short is truncation, and closes the session too.
    let (_, mut s) = pair();
    assert!(matches!(
        s.recv_into(&mut &f0[..f0.len() - 1], &mut buf),
        Err(SessionError::Frame(FrameError::Truncated { .. }))
    ));
    assert!(s.dead);
}

#[test]
fn split_halves_keep_the_counters() {
    let (mut c, mut s) = pair();
    let mut wire = Vec::new();
    c.send(&mut wire, &1u8).unwrap();
    let mut back = Vec::new();
    s.send(&mut back, &2u8).unwrap();
    s.send(&mut back, &3u8).unwrap();
    let mut back = back.as_slice();
    assert_eq!(c.recv::<_, u8>(&mut back).unwrap(), 2);
    {
        let (mut sealer, mut opener) = c.split().unwrap();
        let mut buf = Vec::new();
        sealer
            .seal_with(&mut buf, |v| {
                v.extend_from_slice(&postcard::to_stdvec(&4u8).unwrap());
                Ok(())
            })
            .unwrap();
        wire.extend_from_slice(&buf);
        assert_eq!(opener.recv::<_, u8>(&mut back).unwrap(), 3);
        assert!(matches!(
            opener.recv::<_, u8>(&mut back),
            Err(SessionError::Frame(FrameError::Closed))
        ));
        assert!(matches!(
            opener.recv::<_, u8>(&mut back),
            Err(SessionError::Closed)
        ));
    }
    c.send(&mut wire, &5u8).unwrap();
    let mut r = wire.as_slice();
    for want in [1u8, 4, 5] {
        assert_eq!(s.recv::<_, u8>(&mut r).unwrap(), want);
    }
    c.close();
    assert!(matches!(c.split(), Err(SessionError::Closed)));
}

#[test]
fn seal_with_matches_send_bytes() {
    let (mut a, _) = pair();
    let (mut b, mut s) = pair();
    let mut w1 = Vec::new();
    a.send_bytes(&mut w1, b"payload").unwrap();
    let (mut sealer, _) = b.split().unwrap();
    let mut w2 = Vec::new();
    sealer
        .seal_with(&mut w2, |v| {
            v.extend_from_slice(b"payload");
            Ok(())
        })
        .unwrap();
    assert_eq!(w1, w2);
    assert_eq!(s.recv_bytes(&mut w2.as_slice()).unwrap(), b"payload");
    let too_big = vec![0u8; MAX_PLAINTEXT + 1];
    let r = sealer.seal_with(&mut w2, |v| {
        v.extend_from_slice(&too_big);
        Ok(())
    });
    assert!(matches!(r, Err(SessionError::TooLarge(_))));
}

#[test]
fn length_header_is_authenticated() {
    let frame = seal(&[1; 32], 0, b"abc").unwrap();
    assert_eq!(open(&[1; 32], 0, &frame[4..]).unwrap(), b"abc");
    // Truncating the body changes the header the receiver computes.
    assert!(matches!(
        open(&[1; 32], 0, &frame[4..frame.len() - 1]),
        Err(SessionError::Decrypt)
    ));
    assert!(matches!(
        open(&[1; 32], 1, &frame[4..]),
        Err(SessionError::Decrypt)
    ));
}
