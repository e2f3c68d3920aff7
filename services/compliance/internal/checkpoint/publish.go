package checkpoint

import (
	"context"
	"fmt"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Topic is where the checkpoints are published: key the account, value
// the signed note with the cosignatures collected when it was published.
// It is a stream, at least once: the loop publishes each account's latest
// checkpoint until the broker takes it (a checkpoint superseded while the
// broker was away is skipped), and publishes it again when a witness
// cosigns it later, so a reader may see one size twice, the second time
// with more cosignatures. It is not compacted: monitors keep every
// checkpoint they see, and any two are proved consistent by the log.
const Topic = "rcm.compliance-checkpoints.v1"

// Publisher returns the PublishFunc that produces to topic with cl.
func Publisher(cl *kgo.Client, topic string) PublishFunc {
	return func(ctx context.Context, account string, text []byte) error {
		rec := &kgo.Record{
			Topic: topic, Key: []byte(account), Value: text,
			Headers: []kgo.RecordHeader{{Key: "content-type", Value: []byte("text/plain")}},
		}
		if err := cl.ProduceSync(ctx, rec).FirstErr(); err != nil {
			return fmt.Errorf("publish checkpoint of %s: %w", account, err)
		}
		return nil
	}
}
