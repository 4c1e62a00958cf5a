#include "tollgate/util/bounded_queue.h"

#include <catch2/catch.hpp>
#include <chrono>
#include <future>
#include <thread>

using tollgate::util::BoundedQueue;
using Clock = std::chrono::steady_clock;

TEST_CASE("the queue hands items over in order, all at once") {
  BoundedQueue<int> q(8);
  for (int i = 0; i < 5; ++i) REQUIRE(q.push(i));
  CHECK(q.size() == 5);
  std::vector<int> out;
  REQUIRE(q.pop_all(out, Clock::now()));
  CHECK(out == std::vector<int>{0, 1, 2, 3, 4});
  CHECK(q.size() == 0);
}

TEST_CASE("pop_all on an empty open queue returns true and nothing at its deadline") {
  BoundedQueue<int> q(2);
  std::vector<int> out;
  CHECK(q.pop_all(out, Clock::now() + std::chrono::milliseconds(1)));
  CHECK(out.empty());
}

TEST_CASE("a full queue holds its producer back until the consumer drains it") {
  BoundedQueue<int> q(2);
  REQUIRE(q.push(1));
  REQUIRE(q.push(2));
  auto third = std::async(std::launch::async, [&q] { return q.push(3); });
  // The producer cannot finish while the queue is full: nothing but a drain lets it go.
  CHECK(third.wait_for(std::chrono::milliseconds(50)) == std::future_status::timeout);
  std::vector<int> out;
  REQUIRE(q.pop_all(out, Clock::now()));
  CHECK(third.get());
  out.clear();
  REQUIRE(q.pop_all(out, Clock::now() + std::chrono::seconds(60)));
  CHECK(out == std::vector<int>{3});
}

TEST_CASE("close wakes a blocked producer and a waiting consumer; what is queued still drains") {
  BoundedQueue<int> q(1);
  REQUIRE(q.push(7));
  auto blocked = std::async(std::launch::async, [&q] { return q.push(8); });
  q.close();
  CHECK_FALSE(blocked.get());  // dropped: the queue closed while it waited
  CHECK_FALSE(q.push(9));
  std::vector<int> out;
  CHECK(q.pop_all(out, Clock::now() + std::chrono::seconds(60)));
  CHECK(out == std::vector<int>{7});
  out.clear();
  CHECK_FALSE(q.pop_all(out, Clock::now() + std::chrono::seconds(60)));  // closed and empty
}

TEST_CASE("a consumer waiting on an empty queue wakes for the first push") {
  BoundedQueue<int> q(4);
  auto consumer = std::async(std::launch::async, [&q] {
    std::vector<int> out;
    q.pop_all(out, Clock::now() + std::chrono::seconds(60));
    return out;
  });
  REQUIRE(q.push(5));
  CHECK(consumer.get() == std::vector<int>{5});
}
