//! A byte trie of path prefixes: walking a request path visits every route prefix it starts
//! with, in time proportional to the path, whatever the number of routes.

#[derive(Debug, Default)]
struct Node {
    children: Vec<(u8, u32)>,
    matchers: Vec<u32>,
}

/// Path prefixes → matcher indexes.
#[derive(Debug)]
pub(super) struct Trie {
    nodes: Vec<Node>,
}

impl Default for Trie {
    fn default() -> Self {
        Trie {
            nodes: vec![Node::default()],
        }
    }
}

impl Trie {
    pub(super) fn insert(&mut self, prefix: &[u8], matcher: u32) {
        let mut node = 0usize;
        for &b in prefix {
            node = match self.nodes[node].children.binary_search_by_key(&b, |(c, _)| *c) {
                Ok(i) => self.nodes[node].children[i].1 as usize,
                Err(i) => {
                    let next = self.nodes.len() as u32;
                    self.nodes.push(Node::default());
                    self.nodes[node].children.insert(i, (b, next));
                    next as usize
                }
            };
        }
        self.nodes[node].matchers.push(matcher);
    }

    /// Appends the matchers of every prefix of `path`.
    pub(super) fn collect_prefixes(&self, path: &[u8], out: &mut Vec<u32>) {
        let mut node = 0usize;
        out.extend_from_slice(&self.nodes[0].matchers);
        for &b in path {
            match self.nodes[node].children.binary_search_by_key(&b, |(c, _)| *c) {
                Ok(i) => node = self.nodes[node].children[i].1 as usize,
                Err(_) => return,
            }
            out.extend_from_slice(&self.nodes[node].matchers);
        }
    }
}
