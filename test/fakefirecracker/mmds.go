package main

import "encoding/json"

// The MMDS data store: PUT replaces it, PATCH applies an RFC 7396 merge patch,
// GET returns it ({} while empty). Allowed before and after boot.

func (v *microVM) getMMDS(string, []byte) (any, error) {
	if v.mmds == nil {
		return map[string]any{}, nil
	}
	return v.mmds, nil
}

func (v *microVM) putMMDS(_ string, body []byte) (any, error) {
	var doc any
	if err := decode(body, &doc); err != nil {
		return nil, err
	}
	v.mmds = doc
	return nil, nil
}

func (v *microVM) patchMMDS(_ string, body []byte) (any, error) {
	if v.mmds == nil {
		// Approximated wording (MmdsDatastoreError::NotInitialized).
		return nil, faultf("MMDS error: The MMDS data store is not initialized.")
	}
	var patch any
	if err := json.Unmarshal(body, &patch); err != nil {
		return nil, faultf("An error occurred when deserializing the json body of a request: %v.", err)
	}
	v.mmds = mergePatch(v.mmds, patch)
	return nil, nil
}

// mergePatch applies patch to target per RFC 7396: objects merge key by key,
// null deletes a key, anything else replaces.
func mergePatch(target, patch any) any {
	p, ok := patch.(map[string]any)
	if !ok {
		return patch
	}
	t, ok := target.(map[string]any)
	if !ok {
		t = map[string]any{}
	}
	for k, pv := range p {
		if pv == nil {
			delete(t, k)
			continue
		}
		t[k] = mergePatch(t[k], pv)
	}
	return t
}
