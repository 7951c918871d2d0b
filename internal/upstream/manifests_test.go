package upstream

import "testing"

func TestNextPage(t *testing.T) {
	const base = "http://reg:5000/v2/test/img/"
	for _, tc := range []struct {
		link, want string
		err        bool
	}{
		{"", "", false},
		{`</v2/test/img/tags/list?last=b&n=2>; rel="next"`, "tags/list?last=b&n=2", false},
		{`<http://reg:5000/v2/test/img/tags/list?last=b>; rel="next"`, "tags/list?last=b", false},
		{`</v2/test/img/tags/list?last=b>; rel="prev"`, "", false},
		{`<http://evil:80/v2/test/img/tags/list?last=b>; rel="next"`, "", true},
		{`</v2/other/tags/list?last=b>; rel="next"`, "", true},
	} {
		got, err := nextPage(tc.link, base)
		if got != tc.want || (err != nil) != tc.err {
			t.Errorf("nextPage(%q) = %q, %v; want %q, error %v", tc.link, got, err, tc.want, tc.err)
		}
	}
}
