// Package inventory keeps items in memory and serves them as JSON.
package inventory

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
)

// Item is one stock-keeping unit.
type Item struct {
	SKU      string `json:"sku"`
	Name     string `json:"name"`
	Quantity int    `json:"quantity"`
	Price    int    `json:"priceCents"`
}

// Validate reports what is wrong with it.
func (it Item) Validate() error {
	var errs []string
	if strings.TrimSpace(it.SKU) == "" {
		errs = append(errs, "sku is empty")
	}
	if it.Quantity < 0 {
		errs = append(errs, fmt.Sprintf("quantity %d is negative", it.Quantity))
	}
	if it.Price < 0 {
		errs = append(errs, fmt.Sprintf("price %d is negative", it.Price))
	}
	if len(errs) > 0 {
		return errors.New(strings.Join(errs, "; "))
	}
	return nil
}

// Inventory is a set of items, safe for concurrent use.
type Inventory struct {
	mu    sync.RWMutex
	items map[string]Item
}

// New returns an empty inventory.
func New() *Inventory { return &Inventory{items: map[string]Item{}} }

// Put adds or replaces an item.
func (inv *Inventory) Put(it Item) error {
	if err := it.Validate(); err != nil {
		return fmt.Errorf("item %q: %w", it.SKU, err)
	}
	inv.mu.Lock()
	defer inv.mu.Unlock()
	inv.items[it.SKU] = it
	return nil
}

// Get returns the item with this SKU.
func (inv *Inventory) Get(sku string) (Item, bool) {
	inv.mu.RLock()
	defer inv.mu.RUnlock()
	it, ok := inv.items[sku]
	return it, ok
}

// List returns the items sorted by SKU.
func (inv *Inventory) List() []Item {
	inv.mu.RLock()
	defer inv.mu.RUnlock()
	out := make([]Item, 0, len(inv.items))
	for _, it := range inv.items {
		out = append(out, it)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].SKU < out[j].SKU })
	return out
}

// Handler serves GET (all items, or ?sku=) and POST (one item as JSON).
func Handler(inv *Inventory) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodGet:
			if sku := r.URL.Query().Get("sku"); sku != "" {
				it, ok := inv.Get(sku)
				if !ok {
					http.NotFound(w, r)
					return
				}
				writeJSON(w, http.StatusOK, it)
				return
			}
			writeJSON(w, http.StatusOK, inv.List())
		case http.MethodPost:
			var it Item
			dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&it); err != nil {
				http.Error(w, "decoding item: "+err.Error(), http.StatusBadRequest)
				return
			}
			if err := inv.Put(it); err != nil {
				http.Error(w, err.Error(), http.StatusUnprocessableEntity)
				return
			}
			writeJSON(w, http.StatusCreated, it)
		default:
			w.Header().Set("Allow", "GET, POST")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		}
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}
