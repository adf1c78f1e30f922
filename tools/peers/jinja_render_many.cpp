// Renders each template of a JSON array (argv[1]) with lvt::text::ChatTemplate, one fixed
// conversation and l=[1,2,3], s="ab c"; prints a JSON array of renders (null on error). Used by
// tools/peers/diff_jinja_random.py to compare against jinja2 on random templates.
#include <lvt/text/chat_template.hpp>
#include <iostream>
#include <fstream>
int main(int, char** argv) {
  std::ifstream in(argv[1]);
  auto cases = lvt::text::OrderedJson::parse(in);
  lvt::text::OrderedJson out = lvt::text::OrderedJson::array();
  auto msgs = lvt::text::OrderedJson::parse(R"([{"role":"user","content":"Hi"}])");
  for (auto& c : cases) {
    try { lvt::text::ChatTemplate t(c.get<std::string>()); out.push_back(t.render(msgs, true, {{"l", {1,2,3}}, {"s", "ab c"}})); }
    catch (const std::exception& e) { out.push_back(nullptr); }
  }
  std::cout << out.dump() << "\n";
}
