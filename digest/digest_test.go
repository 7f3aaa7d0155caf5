package digest

import "testing"

// The digests are a protocol contract: the expected values are fixed here, so a change to
// their definition (which would make every deployed agent look drifted) fails this test.
func TestDigestsAreStable(t *testing.T) {
	a := AppliedSet([]Applied{{PublishID: "b", Revision: 2, Checksum: "cb"}, {PublishID: "a", Revision: 1, Checksum: "ca", Drift: "edited"}})
	b := AppliedSet([]Applied{{PublishID: "a", Revision: 1, Checksum: "ca", Drift: "edited"}, {PublishID: "b", Revision: 2, Checksum: "cb"}})
	if a != b {
		t.Fatal("the applied digest depends on order")
	}
	if a == AppliedSet([]Applied{{PublishID: "a", Revision: 1, Checksum: "ca"}, {PublishID: "b", Revision: 2, Checksum: "cb"}}) {
		t.Fatal("drift does not change the digest")
	}
	if got, want := AppliedSet(nil), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"; got != want {
		t.Fatalf("empty applied set: %s, want %s", got, want)
	}
	c := CredentialSet(map[string]int64{"x": 3, "y": 1})
	if c == CredentialSet(map[string]int64{"x": 4, "y": 1}) || c != CredentialSet(map[string]int64{"y": 1, "x": 3}) {
		t.Fatal("the credential checksum must depend on versions, not on order")
	}
}
