//! Property tests: encoding then decoding gives back the same operations.

mod common;

use bytes::BytesMut;
use common::*;
use proptest::prelude::*;
use tern_protocol::text::{
    encode_client_op, encode_server_op, ClientDecoder, Limits, ServerDecoder,
};

proptest! {
    #[test]
    fn client_op_roundtrips(op in client_op()) {
        let mut buf = BytesMut::new();
        encode_client_op(&op, &mut buf);
        let mut dec = ClientDecoder::new(Limits::default());
        prop_assert_eq!(dec.decode(&mut buf), Ok(Some(op)));
        prop_assert!(buf.is_empty());
        prop_assert_eq!(dec.decode(&mut buf), Ok(None));
    }

    #[test]
    fn server_op_roundtrips(op in server_op()) {
        let mut buf = BytesMut::new();
        encode_server_op(&op, &mut buf);
        let mut dec = ServerDecoder::new(Limits::default());
        prop_assert_eq!(dec.decode(&mut buf), Ok(Some(op)));
        prop_assert!(buf.is_empty());
        prop_assert_eq!(dec.decode(&mut buf), Ok(None));
    }

    #[test]
    fn client_stream_split_anywhere(
        ops in prop::collection::vec(client_op(), 0..10),
        points in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let bytes = encode_client(&ops);
        let limits = Limits::default();
        let whole = feed(&mut ClientDecoder::new(limits), limits, &[&bytes]);
        let split = feed(
            &mut ClientDecoder::new(limits),
            limits,
            &split_at_points(&bytes, &points),
        );
        let expected: Vec<_> = ops.into_iter().map(Ok).collect();
        prop_assert_eq!(&whole, &expected);
        prop_assert_eq!(&split, &expected);
    }

    #[test]
    fn client_stream_byte_by_byte(ops in prop::collection::vec(client_op(), 0..4)) {
        let bytes = encode_client(&ops);
        let limits = Limits::default();
        let chunks: Vec<Vec<u8>> = bytes.iter().map(|&b| vec![b]).collect();
        let split = feed(&mut ClientDecoder::new(limits), limits, &chunks);
        let expected: Vec<_> = ops.into_iter().map(Ok).collect();
        prop_assert_eq!(split, expected);
    }

    #[test]
    fn server_stream_split_anywhere(
        ops in prop::collection::vec(server_op(), 0..10),
        points in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let bytes = encode_server(&ops);
        let limits = Limits::default();
        let whole = feed(&mut ServerDecoder::new(limits), limits, &[&bytes]);
        let split = feed(
            &mut ServerDecoder::new(limits),
            limits,
            &split_at_points(&bytes, &points),
        );
        let expected: Vec<_> = ops.into_iter().map(Ok).collect();
        prop_assert_eq!(&whole, &expected);
        prop_assert_eq!(&split, &expected);
    }
}
