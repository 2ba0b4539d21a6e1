// Package discovery is the Discovery phase of X.1205 Supplement 20 clause 6.2 with no central
// server: a Kademlia DHT formed by ssanet agents only (protocol prefix /ssanet), in which each
// provider advertises the information it offers under keys derived from (information type)
// and (information type, format), and LAN discovery with mDNS. Optionally (Config.Amino) the
// directory is the public IPFS DHT (/ipfs/kad/1.0.0) instead, with keys that also carry the
// community's name (CommunityKey).
//
// The directory holds only pointers ("this peer provides type T"); the offers themselves are
// fetched from the provider over /ssanet/offers/1.0.0 as a list signed with the provider's
// identity key, so that a forged or stale offer is refused (and logged), never shown, and a
// provider that is gone, or that withdrew an offer, stops being shown at once. The same fetch
// validates an entity a requester already knows (DiscoverPeer).
//
// The package never negotiates and never stores anything on disk.
package discovery
