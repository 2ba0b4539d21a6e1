package protocol

import (
	"slices"
	"testing"
	"time"
)

// docGoldenCases builds one of each exchange-phase document from the fixed provider identity
// (2), the example offer and the fixed time t0: the signed offer list, a signed batch, a
// signed report, and the unsigned batch ack and report request that travel beside them.
func docGoldenCases(t testing.TB) map[string][]byte {
	t.Helper()
	pid := testIdentity(t, 2)
	must := func(b []byte, err error) []byte {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	offer := exampleOffer(t, t0)
	offer.Terms.Participants.Provider.PeerID = pid.PeerID().String()
	const ssaID, sspHash = "ssa-test-1", "5c4f0d9a3b2e1f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8"
	return map[string][]byte{
		"offers": must(SealOffers(pid, []*Offer{offer}, t0, time.Hour)),
		"batch": must(SealBatch(pid, &Batch{SSAID: ssaID, SSPHash: sspHash, First: 41, Format: FormatEVE,
			TLP: TLPGreen, Marking: "marking-definition--bab4a63c-aed9-4cf5-a766-dfca5abac2bb", Sent: t0.UnixMilli(),
			Records: [][]byte{[]byte(`{"event_type":"alert","src_ip":"192.0.2.1"}`), []byte(`{"event_type":"alert","src_ip":"192.0.2.2"}`)}})),
		"report": must(SealReport(pid, &Report{SSAID: ssaID, SSPHash: sspHash, Time: t0.UnixMilli(), Ingested: 10, Refined: 8,
			Dropped: 2, Sent: 8, Acked: 7, LatencyP50: 12, LatencyP95: 40, LatencyP99: 95, InSchedule: true, IngestPaused: true})),
		"report-outcomes": must(SealReport(pid, &Report{SSAID: ssaID, SSPHash: sspHash, Time: t0.UnixMilli(), Ingested: 10, Refined: 6,
			Dropped: 4, Sent: 5, Acked: 5, InSchedule: true, Outcomes: map[string]uint64{"shared": 5, "not_queued": 1, "filtered": 2, "malformed": 3},
			OutcomesIngested: 11, OutcomesSince: t0.Add(-time.Hour).UnixMilli()})),
		"report-filtered-by": must(SealReport(pid, &Report{SSAID: ssaID, SSPHash: sspHash, Time: t0.UnixMilli(), Ingested: 10, Refined: 6,
			Dropped: 4, Sent: 6, Acked: 6, InSchedule: true, Outcomes: map[string]uint64{"shared": 6, "filtered": 4},
			OutcomesIngested: 10, OutcomesSince: t0.Add(-time.Hour).UnixMilli(), OutcomesFilteredBy: []uint64{3, 0, 1}})),
		"batch-ack":       must((&BatchAck{SSAID: ssaID, Last: 42}).Encode()),
		"batch-ack-error": must((&BatchAck{SSAID: ssaID, Last: 40, Error: "refused: digest"}).Encode()),
		"report-request":  must((&ReportRequest{SSAID: ssaID}).Encode()),
	}
}

// TestGoldenDocs fails when the bytes of an exchange-phase document change, and checks that
// today's code still reads yesterday's bytes.
func TestGoldenDocs(t *testing.T) {
	pid := testIdentity(t, 2).PeerID()
	for name, got := range docGoldenCases(t) {
		t.Run(name, func(t *testing.T) {
			want := checkGolden(t, name, got)
			var err error
			switch name {
			case "offers":
				_, err = OpenOffers(want, pid, t0)
			case "batch":
				_, err = OpenBatch(want, pid)
			case "report", "report-outcomes":
				_, err = OpenReport(want, pid)
			case "report-filtered-by":
				var r *Report
				if r, err = OpenReport(want, pid); err == nil && !slices.Equal(r.OutcomesFilteredBy, []uint64{3, 0, 1}) {
					t.Errorf("filtered by %v, want [3 0 1]", r.OutcomesFilteredBy)
				}
			case "batch-ack", "batch-ack-error":
				_, err = DecodeBatchAck(want)
			case "report-request":
				_, err = DecodeReportRequest(want)
			default:
				t.Fatalf("no reader for golden %s", name)
			}
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}
