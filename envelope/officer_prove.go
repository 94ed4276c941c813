package envelope

import "context"

// Prove opens header's DEK through the officers as [OfficerKeyring.Decrypt]
// would, with no ciphertext: a drill's proof that the branch works. The
// key is dropped at once; nothing is cached or added to
// [OfficerKeyring.Reports] (recovery uses [OfficerKeyring.Report]).
func (k *OfficerKeyring) Prove(ctx context.Context, header []byte) OfficerReport {
	d, rep := k.open(ctx, header)
	if d != nil {
		clear(d.dataRoot)
	}
	return *rep
}
