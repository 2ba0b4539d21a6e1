package agent

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"sync"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	ma "github.com/multiformats/go-multiaddr"
)

// addrBook keeps the listen addresses of the peers this agent has agreements with or must
// send to by itself (an unacknowledged message, a decision to come) (HOME/peers.json), so
// that after a restart it can still reach them to resend, decide, revise, cancel, deliver and
// monitor, even when the directory cannot find them.
type addrBook struct {
	path string
	ps   peerstore.Peerstore
	mu   sync.Mutex
	m    map[string][]string
}

const addrBookFile = "peers.json"

// loadAddrBook reads the book and puts its addresses in the peerstore.
func loadAddrBook(path string, ps peerstore.Peerstore) (*addrBook, error) {
	b := &addrBook{path: path, ps: ps, m: map[string][]string{}}
	data, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(data) > 0 {
		if err := json.Unmarshal(data, &b.m); err != nil {
			return nil, fmt.Errorf("%s: %w (delete it to start afresh)", path, err)
		}
	}
	for id, addrs := range b.m {
		p, err := peer.Decode(id)
		if err != nil {
			continue
		}
		for _, s := range addrs {
			if a, err := ma.NewMultiaddr(s); err == nil {
				ps.AddAddr(p, a, peerstore.PermanentAddrTTL)
			}
		}
	}
	return b, nil
}

// remember saves the addresses the peerstore knows for p, if they changed.
func (b *addrBook) remember(p peer.ID) error {
	var addrs []string
	for _, a := range b.ps.Addrs(p) {
		addrs = append(addrs, a.String())
	}
	slices.Sort(addrs)
	if len(addrs) == 0 {
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if slices.Equal(b.m[p.String()], addrs) {
		return nil
	}
	b.m[p.String()] = addrs
	data, err := json.MarshalIndent(b.m, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(b.path, data)
}
