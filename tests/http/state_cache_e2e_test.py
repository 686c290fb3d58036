"""End-to-end (label e2e, CPU, `bmserve serve --demo`): the state cache over a multi-turn chat.

Two servers on the same demo model, one with `--state-cache-entries` and one without, get the
same three-turn greedy conversation (each turn sends the whole history, as chat clients do).
With the cache on, turns 2 and 3 resume a cached state (bmserve:state_cache_hits_total grows,
and bmserve:prompt_tokens_total grows by exactly the prompt tokens not resumed), and every turn's
reply equals the reply of the server without the cache. A completion whose prompt shares only a
short head (below --state-cache-min-tokens) gets no hit. Binary from the environment:
BMSERVE_BIN."""
import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
from demo_server import DemoServer  # noqa: E402

BMSERVE = os.environ.get('BMSERVE_BIN', '')


def converse(server, turns):
    """Runs the conversation; returns each turn's reply and its usage.prompt_tokens."""
    messages = [{'role': 'system', 'content': 'You are a terse assistant for state-space models.'}]
    replies, prompt_tokens = [], []
    for user in turns:
        messages.append({'role': 'user', 'content': user})
        r = server.post('/v1/chat/completions', {'messages': messages, 'max_tokens': 12,
                                                 'temperature': 0, 'ignore_eos': True})
        reply = r['choices'][0]['message']['content']
        replies.append(reply)
        prompt_tokens.append(r['usage']['prompt_tokens'])
        messages.append({'role': 'assistant', 'content': reply})
    return replies, prompt_tokens


class StateCacheE2e(unittest.TestCase):
    def test_multi_turn_chat_resumes_cached_states_with_the_same_replies(self):
        turns = ['What does a Mamba layer keep between tokens?',
                 'And how large is it for a long conversation?',
                 'Thanks. One more time, in five words.']
        plain = DemoServer(BMSERVE)
        try:
            want, _ = converse(plain, turns)
        finally:
            plain.stop()
        cached = DemoServer(BMSERVE, '--state-cache-entries', '16', '--state-cache-min-tokens', '8')
        try:
            got, prompt_tokens = converse(cached, turns)
            hits = cached.metric('state_cache_hits_total')
            reused = cached.metric('state_cache_prompt_tokens_total')
            computed = cached.metric('prompt_tokens_total')
            entries = cached.metric('state_cache_entries')
            # A short shared head is not enough for a hit.
            cached.post('/v1/completions', {'prompt': 'You are', 'max_tokens': 2})
            hits_after = cached.metric('state_cache_hits_total')
        finally:
            cached.stop()
        self.assertEqual(got, want)
        self.assertGreaterEqual(hits, 2, 'turns 2 and 3 should each resume a cached state')
        self.assertGreater(reused, prompt_tokens[0] - 1)  # at least turn 1's prompt, once
        self.assertEqual(computed + reused, sum(prompt_tokens))
        self.assertGreater(entries, 0)
        self.assertEqual(hits_after, hits)


if __name__ == '__main__':
    if not BMSERVE:
        sys.exit('BMSERVE_BIN is not set')
    unittest.main()
